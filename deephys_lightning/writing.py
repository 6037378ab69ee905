"""Rank zero's part of a recorded epoch: the gathered rows as what the writer takes.

``DeephysCallback`` decides where a record goes and when; this module turns each
dataset's gathered rows (``deephys_lightning.rows.Rows``, on the CPU) into a
``summary.DatasetRecording`` (thumbnails only when their digest is new to the run),
names the classes, says what is odd about the data (non-finite activations, a set
recorded in part), and claims a run directory for an evaluation at a held step.

Example::

    recordings, digests = dataset_recordings({"ind": rows}, known_digests={}, logits=None)
    names = class_names_for(10, recordings, given=None)      # ["0", ..., "9"]
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from deephys_lightning.rows import Rows
from deephys_lightning.spatial_maps import TopMaps
from deephys_lightning.summary import DatasetRecording
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.assets import Thumbnails
from tensorboard_plugin_deephys.log.metadata import Record

LogitsToWrite = Callable[[torch.Tensor | None, Mapping[str, np.ndarray]], np.ndarray | None]


def dataset_recordings(
    rows_by_name: Mapping[str, Rows],
    known_digests: Mapping[str, str],
    logits: LogitsToWrite | None,
    top_maps: Mapping[str, Mapping[str, TopMaps]] | None = None,
) -> tuple[dict[str, DatasetRecording], dict[str, str]]:
    """Each dataset's recording, in the order given, and the thumbnail digests that are
    new (their thumbnails are written; a digest the run holds already is not).
    ``top_maps``: by dataset, the layers' maps of their top images (``spatial_maps``)."""
    recordings: dict[str, DatasetRecording] = {}
    digests: dict[str, str] = {}
    for name, rows in rows_by_name.items():
        thumbs = None
        if rows.thumbs is not None:
            made = Thumbnails.of(rows.thumbs.numpy())
            if known_digests.get(name) != made.digest:
                thumbs, digests[name] = made, made.digest
        acts = {layer: a.numpy() for layer, a in rows.acts.items()}
        recordings[name] = DatasetRecording(
            labels=rows.labels.numpy(),
            predictions=rows.preds.numpy(),
            activations=acts,
            logits=None if logits is None else logits(rows.logits, acts),
            logit_scores=None if rows.logit_scores is None else rows.logit_scores.numpy(),
            top_classes=None if rows.top_classes is None else rows.top_classes.numpy(),
            top_probabilities=(
                None if rows.top_probabilities is None else rows.top_probabilities.numpy()
            ),
            thumbnails=thumbs,
            positions=rows.positions.numpy(),
            top_maps=dict((top_maps or {}).get(name, {})),
        )
    return recordings, digests


def class_names_for(
    num_classes: int, recordings: Mapping[str, DatasetRecording], given: Any
) -> list[str]:
    """The given class names (``GivenClassNames``, whose labels were checked when the
    rows were gathered), else ``"0"``, ``"1"``, ... up to the number of logits or the
    largest label."""
    if given is not None:
        return list(given.names)
    max_label = max((int(r.labels.max()) for r in recordings.values() if len(r.labels)), default=-1)
    return [str(i) for i in range(max(num_classes, max_label + 1))]


def evaluation_dir(log_dir: str, stage: str, step: int) -> str:
    """A new run directory under ``log_dir`` for an evaluation at a step it already has:
    ``<stage>_step<step>``, or with ``_2``, ``_3``, ... when that is taken."""
    base = storage.join(log_dir, f"{stage}_step{step}")
    return claim_new_dir(itertools.chain([base], (f"{base}_{n}" for n in itertools.count(2))))


def new_version_dir(root: str) -> str:
    """A new ``version_N`` under ``root`` (N one more than the highest there), as
    Lightning's loggers number theirs: where records go without a logger directory."""
    try:
        names = storage.listdir(root)
    except FileNotFoundError:
        names = []
    taken = [int(n[len("version_") :]) for n in names if re.fullmatch(r"version_\d+", n)]
    first = max(taken, default=-1) + 1
    return claim_new_dir(storage.join(root, f"version_{n}") for n in itertools.count(first))


def claim_new_dir(candidates: Iterable[str]) -> str:
    """The first of ``candidates`` no one uses. A local folder is claimed by making it
    (two jobs never pick the same one); on an object store, where folders are only
    prefixes, the first name without objects is taken."""
    for path in candidates:
        if storage.is_url(path):
            if not storage.exists(path):
                return path
            continue
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the candidates are endless")


def warn_partial(record: Record, max_images: int | None) -> None:
    """Say when a set was recorded in part for another reason than ``max_images``."""
    for name in record.datasets:
        size = record.dataset_sizes.get(name)
        count = record.num_images[name]
        if size is not None and count < min(size, max_images or size):
            rank_zero_warn(
                f"DeephysCallback: {count} of the {size} images of {name!r} were recorded "
                "(limit_val_batches / limit_test_batches, or a dataloader that stops "
                "early); the scores describe that part. The tab shows 'N of M images'."
            )


def warn_non_finite(recordings: Mapping[str, DatasetRecording]) -> None:
    """Say which layer and dataset hold NaN or infinite activations (float16 overflow)."""
    for name, rec in recordings.items():
        for layer, acts in rec.activations.items():
            rows = torch.from_numpy(acts)
            bad = sum(  # in blocks: a full boolean mask would be half the matrix again
                int((~torch.isfinite(rows[i : i + 4096])).sum()) for i in range(0, len(rows), 4096)
            )
            if bad:
                rank_zero_warn(
                    f"DeephysCallback: {bad} activations of layer {layer!r} on {name!r} are NaN "
                    "or infinite (float16 overflows above 65504). They are recorded as they "
                    "are; scores of the affected neurons are NaN. Record a layer whose "
                    "outputs stay in float16's range (after a normalization), or scale it "
                    "with reduction=."
                )
