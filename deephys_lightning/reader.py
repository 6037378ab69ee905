"""Read a Deephys log back as NumPy arrays.

Loads event files with TensorBoard's own event multiplexer (keeping every step)
and reads them through the same read model as the TensorBoard plugin
(``tensorboard_plugin_deephys.log.read_model``), so what you get here is what the Deephys tab shows.
Needs NumPy and TensorBoard only: ``from deephys_lightning import read_log`` does
not import torch or Lightning.

Example::

    from deephys_lightning import read_log

    log = read_log("lightning_logs/version_0")
    log.datasets                                    # ("colored", "permuted", ...), InD first
    acts = log.activations("backbone.fc1", "permuted")   # [N, M] float16, latest step
    labels = log.labels("permuted", step=log.steps[0])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.context import RequestContext
from tensorboard.errors import NotFoundError

from deephys_lightning import fast_crc
from deephys_lightning.event_files import CheckedEventMultiplexer, Damage
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.derived import OODScores
from tensorboard_plugin_deephys.log.metadata import Detection, Kind, Record
from tensorboard_plugin_deephys.log.read_model import StepData, UnknownNameError
from tensorboard_plugin_deephys.log.records import DeephysReader

_EXPERIMENT = ""
_KEEP_EVERYTHING = {
    event_accumulator.TENSORS: 0,
    event_accumulator.SCALARS: 0,
}


class DeephysLog:
    """The Deephys data of one run; arrays are read lazily and cached.

    Every accessor takes the recorded global ``step`` last; without it, the latest
    step. Missing data raise ``KeyError`` with what exists and how to record it.
    Use :func:`read_log` to make one.

    Example::

        log = read_log("lightning_logs/version_0")
        log.scores("backbone.fc1", "permuted").summary()["novelty_mean"]   # latest step
        log.activations("backbone.fc1", "permuted", step=log.steps[0])
    """

    def __init__(self, reader: DeephysReader, run: str, damage: tuple[Damage, ...] = ()) -> None:
        self.run = run
        # Damaged stretches of the run's event files (skipped; every intact record kept).
        self.damage = damage
        self._reader = reader
        self._ctx = RequestContext()
        self.records: tuple[Record, ...] = tuple(reader.records(self._ctx, _EXPERIMENT, run))
        self._by_step = {record.step: record for record in self.records}
        if not self.records:
            raise ValueError(f"run {run!r} holds no readable Deephys record")

    def __repr__(self) -> str:
        return (
            f"DeephysLog(run={self.run!r}, steps={list(self.steps)}, "
            f"stages={sorted({r.stage for r in self.records})}, "
            f"layers={list(self.layers)}, datasets={list(self.datasets)})"
        )

    @property
    def latest(self) -> Record:
        return self.records[-1]

    @property
    def steps(self) -> tuple[int, ...]:
        """The global steps with a record, oldest first."""
        return tuple(r.step for r in self.records)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Dataset names of the latest record, the in-distribution set first."""
        return self.latest.datasets

    @property
    def layers(self) -> tuple[str, ...]:
        return self.latest.layers

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.latest.class_names

    def record(self, step: int | None = None) -> Record:
        """The record at ``step`` (default: the latest)."""
        return self.at(step).record

    def at(self, step: int | None = None) -> StepData:
        """The read model of one step (default: the latest), as the plugin reads it.

        Its methods raise ``tensorboard.errors.NotFoundError`` rather than ``KeyError``.
        """
        if step is None:
            step = self.latest.step
        if step not in self._by_step:
            raise KeyError(f"no Deephys record at step {step}; steps: {list(self.steps)}")
        # A new one each time: only the reader's bounded cache keeps arrays in memory.
        return StepData(self._reader, self._ctx, _EXPERIMENT, self.run, self._by_step[step])

    def missing(self, step: int | None = None) -> tuple[str, ...]:
        """The tags the record at ``step`` (default: the latest) lists as written that
        this log lacks at that step: ``()`` for a complete record (and for records of
        logs written before records listed their tags). See also :attr:`damage`."""
        record = self.record(step)
        return self._reader.missing(self._ctx, _EXPERIMENT, self.run, record, exact=True)

    def activations(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float16 ``[N, M]`` activations of ``layer`` on ``dataset`` at ``step``.

        Raises:
            KeyError: the matrix was not written (it was larger than the callback's
                ``max_activation_bytes``; the view data and scores are still there).
        """
        return self._read(
            step,
            lambda data: data.activations(layer, dataset),
            "The full activation matrix is written only while it is at most "
            "DeephysCallback(max_activation_bytes=...) large; raise that (or set it to "
            "None) or record fewer images with max_images=.",
        )

    def image_top_neurons(
        self, layer: str, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per image, its top neurons ``[N, n]`` and their normalized activations ``[N, n]``."""
        return self._read(step, lambda data: data.image_top_neuron_arrays(layer, dataset))

    def positions(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]``: the index in its dataset of each recorded image."""
        return self._read(step, lambda data: data.positions(dataset))

    def top_images(
        self, layer: str, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per neuron, the top image indices ``[M, k]`` and their activations ``[M, k]``."""
        return self._read(step, lambda data: data.top_image_arrays(layer, dataset))

    def top_maps(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float16 ``[M, k, h, w]``: where each neuron fires on each of its top images
        (``top_maps[j, i]`` belongs to image ``top_images(...)[0][j, i]``): its map over
        the layer's spatial dims (``h, w <= 7``) or tokens (``h = 1``, ``w <= 49``).

        Raises:
            KeyError: the step has no maps for ``layer`` (a flat layer,
                ``DeephysCallback(spatial_maps=False)``, or a log written before them).
        """

        def read(data: StepData) -> np.ndarray:
            maps = data.top_maps(layer, dataset)
            if maps is None:
                raise NotFoundError(f"step {data.step} has no maps of layer {layer!r}")
            return maps

        return self._read(
            step,
            read,
            "Maps are kept for layers whose outputs have spatial or token dims, recorded "
            "with reduction='auto' and spatial_maps=True, in logs written since they exist.",
        )

    def category_means(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[C, M]`` mean activation per category (NaN rows: no images)."""
        return self._read(step, lambda data: data.category_means(layer, dataset))

    def maxima(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[M]`` highest activation of each neuron on ``dataset``; those of the
        InD set normalize every dataset's activations."""
        return self._read(step, lambda data: data.maxima(layer, dataset))

    def scores(self, layer: str, ood: str, step: int | None = None) -> OODScores:
        """Per-neuron novelty (``.novelty``, in the authors' units; ``.novelty_raw``),
        spurious score and activation ratio of an OOD set; ``.summary()`` the means."""
        return self._read(step, lambda data: data.scores(layer, ood))

    def detection(self, ood: str, step: int | None = None) -> list[Detection]:
        """The OOD detection rows of ``ood`` (``DeephysCallback(ood_detectors=...)``):
        per detector, AUROC, AUPR-In, AUPR-Out and FPR at 95 % TPR against the InD set.
        Empty when none were recorded."""
        return self._read(step, lambda data: data.detection(ood))

    def labels(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]`` ground-truth class of each image."""
        return self._read(step, lambda data: data.labels(dataset))

    def predictions(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]`` predicted class of each image."""
        return self._read(step, lambda data: data.predictions(dataset))

    def top_predictions(
        self, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each image's most probable classes, int32 ``[N, k]`` (most probable first,
        so the first is the prediction; equal logits: the lower class first), and their
        softmax probabilities, float32 ``[N, k]``; ``k = min(5, number of classes)``.

        Raises:
            KeyError: the step was written before they were recorded.
        """
        return self._read(
            step,
            lambda data: (
                data.array(Kind.TOP_CLASSES, dataset=dataset),
                data.array(Kind.TOP_PROBABILITIES, dataset=dataset),
            ),
            "Logs written before the callback recorded each image's top predictions "
            "lack them; record again to have them.",
        )

    def logits(self, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[N, C]`` classifier outputs of each image.

        Raises:
            KeyError: they were not recorded at ``step`` (by default they are written
                with the full activation matrix; ``DeephysCallback(record_logits=True)``
                always writes them).
        """
        return self._read(
            step,
            lambda data: data.logits(dataset),
            "Classifier outputs are written while the full activation matrix is "
            "(DeephysCallback(max_activation_bytes=...)), or always with "
            "DeephysCallback(record_logits=True).",
        )

    def thumbnails(self, dataset: str, step: int | None = None) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` images of ``dataset`` (as of ``step``, default latest).

        Raises:
            KeyError: none were recorded, or their file is missing or damaged (the
                message says which file and why).
        """
        return self._read(step, lambda data: data.thumbnail_array(dataset))

    def _read(self, step: int | None, read: Callable[[StepData], Any], hint: str = "") -> Any:
        """``read`` of the step's data; a missing array becomes a ``KeyError`` that says
        what is missing, and ``hint`` (how to record it) unless a name was wrong."""
        data = self.at(step)
        try:
            return read(data)
        except UnknownNameError as error:
            raise KeyError(str(error)) from None
        except NotFoundError as error:
            raise KeyError(f"{error}. {hint}" if hint else str(error)) from None


def read_runs(log_dir: str | os.PathLike) -> dict[str, DeephysLog]:
    """Every run under ``log_dir`` that holds Deephys data, by run name.

    Run names are paths relative to ``log_dir`` (``"."`` is ``log_dir`` itself), as
    TensorBoard shows them.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    logs, damage, left_out = _load(log_dir)
    _warn_damage(damage)
    _warn_left_out(left_out)
    return logs


def _warn_damage(damage: dict[str, list[Damage]]) -> None:
    for found in damage.values():
        for stretch in found:
            what = "event file ends early" if stretch.at_end else "damaged event file"
            warnings.warn(f"{what}: {stretch}", stacklevel=3)


def _warn_left_out(left_out: dict[str, str]) -> None:
    """One line per run with malformed data: what was left out of it, and why."""
    for run, what in sorted(left_out.items()):
        warnings.warn(f"run {run!r}: {what}", stacklevel=3)


def _left_out(reader: DeephysReader, run: str, tags: Mapping[str, str]) -> str | None:
    """What of ``run`` is left out for malformed data (tags of malformed plugin content,
    malformed records), in one line; None when nothing is."""
    parts = [
        f"tag {tag!r} left out, its plugin content is malformed: {c}" for tag, c in tags.items()
    ]
    if run in reader.index(RequestContext(), _EXPERIMENT):
        records = reader.malformed_records(RequestContext(), _EXPERIMENT, run)
        parts += [
            f"the record at step {s} left out, it is malformed: {c}" for s, c in records.items()
        ]
    return "; ".join(parts) or None


def _load(
    log_dir: str | os.PathLike,
) -> tuple[dict[str, DeephysLog], dict[str, list[Damage]], dict[str, str]]:
    """:func:`read_runs`, the damage found in each run's event files (every run's,
    also of runs whose damage left no readable record), and per run, what of it was
    left out for malformed data (a run without a readable record is left out whole,
    the others are read)."""
    log_dir = os.fspath(log_dir)
    if storage.is_url(log_dir):
        log_dir = storage.normalize(log_dir)  # TensorBoard's readers list it as a folder
    if not storage.isdir(log_dir):
        raise FileNotFoundError(f"{log_dir!r} is not a directory")
    fast_crc.install()  # record checks at C speed: reading is ten times faster
    multiplexer = CheckedEventMultiplexer(size_guidance=_KEEP_EVERYTHING)
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, log_dir)
    reader = DeephysReader(provider, logdir=log_dir)
    ctx = RequestContext()
    index, malformed = reader.index(ctx, _EXPERIMENT), reader.malformed_tags(ctx, _EXPERIMENT)
    logs: dict[str, DeephysLog] = {}
    left_out: dict[str, str] = {}
    for run in sorted(set(index) | set(malformed)):
        what = _left_out(reader, run, malformed.get(run, {}))
        try:
            if run not in index:
                raise ValueError("it holds no readable Deephys record")
            logs[run] = DeephysLog(reader, run, tuple(multiplexer.damage.get(run, ())))
        except ValueError as error:  # no readable record: this run only is left out
            cause = str(error).removeprefix(f"run {run!r} ")
            what = f"left out, {cause}" + (f" ({what})" if what else "")
        if what is not None:
            left_out[run] = what
    damage = {run: found for run, found in multiplexer.damage.items() if found}
    return logs, damage, left_out


def read_log(log_dir: str | os.PathLike, run: str | None = None) -> DeephysLog:
    """Read the Deephys data under ``log_dir``.

    Args:
        log_dir: a run directory (such as a TensorBoardLogger's ``log_dir``) or a
            directory of runs.
        run: which run, relative to ``log_dir`` (``"."`` is ``log_dir`` itself, the
            default when it holds Deephys data); needed when several runs below
            ``log_dir`` hold data, e.g. ``"validate_step3"``, an evaluation's own run.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        ValueError: no run holds Deephys data, or several do and ``run`` is not given.
    """
    try:
        logs, damage, left_out = _load(log_dir)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"read_log: {error}") from None
    runs = sorted(logs)
    asked = run
    damaged = "".join(
        f"; run {name!r} has damaged event files ({found[0]})"
        for name, found in sorted(damage.items())
        if name not in logs and (run is None or name == run)
    )
    if run is None and "." in logs:
        run = "."  # a run directory itself (its evaluation runs inside it need run=)
    elif run is None and len(runs) == 1:
        run = runs[0]
    # The damage of the run read (of every run, when none can be picked).
    _warn_damage(damage if run is None else {run: damage.get(run, [])})
    # What was left out of it for malformed data; and of the runs left out whole, when
    # the run was not named (one line per run).
    _warn_left_out(
        {r: w for r, w in left_out.items() if r == run or (asked is None and r not in logs)}
    )
    if run is None:
        raise ValueError(
            f"read_log: {os.fspath(log_dir)!r} holds Deephys data in {len(runs)} runs "
            f"({runs or 'none: was DeephysCallback in the Trainer?'})"
            + ("; pass run= (deephys-lightning export: --run) to pick one" if runs else "")
            + damaged
        )
    if run not in logs:
        why = f" ({left_out[run]})" if run in left_out else ""
        raise ValueError(
            f"read_log: no Deephys data in run {run!r}{why}; runs with data: {runs}{damaged}"
        )
    return logs[run]
