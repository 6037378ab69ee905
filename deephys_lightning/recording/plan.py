"""What one evaluation epoch records, decided once when it starts: the ``EpochPlan``.

The plan names the datasets (InD first), says what each process keeps of each
(``SamplingPlan``), how large each set is, which class names were given, which stage
records and at which (step, epoch), and holds ONE rule for what a record keeps whole:
the float16 activation matrix of a layer and dataset (:func:`writes_matrix`) and, with
it, the classifier outputs (:meth:`EpochPlan.keeps_logits`). The recorder asks it while
capturing, the writer when writing, with the same numbers.

Example::

    >>> writes_matrix(num_images=1000, width=512, max_bytes=1 << 20)   # 1,000 KB
    True
    >>> epoch_mode("fit", ("fit",), sanity_checking=True, fast_dev_run=False,
    ...            record_fast_dev_run=False, epoch=0, every_n_epochs=1, checked=False)
    'check'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DistributedSampler, RandomSampler

from deephys_lightning.recording.sampling import SamplingPlan
from tensorboard_plugin_deephys.log.metadata import (
    MAX_NAME_CONTENT_BYTES,
    name_content_bytes,
    scalar_tag,
)

LOADER_KIND = {"fit": "validation", "validate": "validation", "test": "test"}
MATRIX_ITEM_BYTES = 2  # a recorded activation is float16


def writes_matrix(num_images: int, width: int, max_bytes: int | None) -> bool:
    """THE rule for the full activation matrix of a layer (``width`` neurons) on a
    dataset of ``num_images``: written while it is at most ``max_bytes``
    (``max_activation_bytes``; None: always)."""
    return max_bytes is None or num_images * width * MATRIX_ITEM_BYTES <= max_bytes


class GivenClassNames(NamedTuple):
    """Class names the user gave, and how (for messages)."""

    names: Sequence[str]
    source: str

    def check(self, labels: torch.Tensor, where: str) -> None:
        """Every label of ``where`` must have a name (host ``labels``)."""
        if len(labels) and int(labels.max()) >= len(self.names):
            raise MisconfigurationException(
                f"{self.source} has {len(self.names)} names, but {where} has label "
                f"{int(labels.max())}; give one name per class."
            )


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """One evaluation epoch's plan (see the module docstring).

    ``mode`` is ``"record"`` (keep every batch) or ``"check"`` (run every check on
    each dataloader's first batch, keep nothing); ``order`` the dataloader indices,
    InD first; ``sampling`` each dataloader's ``SamplingPlan`` on this process.
    """

    stage: str
    mode: str
    names: list[str]
    order: list[int]
    sampling: dict[int, SamplingPlan]
    class_names: GivenClassNames | None
    position: tuple[int, int]  # (step, epoch) the record goes to
    max_activation_bytes: int | None
    record_logits: bool | None

    @property
    def kind(self) -> str:
        """ "validation" or "test": the kind of dataloader, for messages."""
        return LOADER_KIND[self.stage]

    @property
    def dataset_sizes(self) -> dict[str, int | None]:
        """Each dataset's length (None when it has none)."""
        return {self.names[idx]: plan.num_images for idx, plan in self.sampling.items()}

    def where(self, idx: int) -> str:
        """A batch of dataloader ``idx``, in words."""
        return f"a {self.kind} batch of dataloader {idx} ({self.names[idx]!r})"

    def keeps_logits(self, num_images: int | None, widths: Iterable[int]) -> bool:
        """Whether a dataset of ``num_images`` (None: not known yet, decided when
        written by this same rule) keeps its classifier outputs, given its layers'
        ``widths``: as ``record_logits`` says, else while some layer's full matrix is
        written (the logits alone export nothing)."""
        if self.record_logits is not None:
            return self.record_logits
        if num_images is None:
            return True
        return any(writes_matrix(num_images, w, self.max_activation_bytes) for w in widths)

    @classmethod
    def make(
        cls,
        trainer: pl.Trainer,
        dataloaders: Any,
        *,
        mode: str,
        dataset_names: Sequence[str] | None,
        ind: str | int | None,
        class_names: Sequence[str] | None,
        max_images: int | None,
        loaded_position: tuple[int, int] | None,
        max_activation_bytes: int | None,
        record_logits: bool | None,
    ) -> EpochPlan:
        """The plan of the epoch that starts (raises ``MisconfigurationException`` on
        names, an ``ind`` or samplers that cannot be recorded)."""
        stage = trainer_stage(trainer)
        named = named_loaders(dataloaders, dataset_names, stage)
        names = [name for name, _ in named]
        check_loader_names(names, stage)
        order = ind_first(names, ind, stage)
        sampling = {
            idx: sampling_plan(loader, trainer, max_images) for idx, (_, loader) in enumerate(named)
        }
        if sampling[order[0]].num_images == 0:
            raise MisconfigurationException(
                f"DeephysCallback: the in-distribution {LOADER_KIND[stage]} dataloader "
                f"{names[order[0]]!r} is empty; every score compares the other sets "
                "with it. Give it images, or name another dataloader with ind=."
            )
        given: GivenClassNames | None
        if class_names is not None:
            given = GivenClassNames(class_names, "DeephysCallback(class_names=...)")
        else:
            found = datamodule_class_names(trainer)
            source = "the datamodule's class names"
            given = None if found is None else GivenClassNames(found, source)
        position = record_position(trainer, stage, loaded_position) if mode == "record" else (0, 0)
        return cls(
            stage,
            mode,
            names,
            order,
            sampling,
            given,
            position,
            max_activation_bytes,
            record_logits,
        )


def matrix_bound(
    max_activation_bytes: int | None,
    stage: str,
    *,
    epoch: int,
    max_epochs: int | None,
    every_n_epochs: int,
    every_n_records: int,
) -> int | None:
    """An epoch's bound on a full matrix: ``max_activation_bytes``, or 0 (none) for a
    fit's recorded epoch that ``matrices_every_n_records`` skips: only the first
    recorded epoch, every ``every_n_records``-th after it and the fit's last keep them.

    >>> [matrix_bound(9, "fit", epoch=e, max_epochs=5, every_n_epochs=1, every_n_records=2)
    ...  for e in range(5)]
    [9, 0, 9, 0, 9]
    >>> matrix_bound(9, "validate", epoch=1, max_epochs=5, every_n_epochs=1, every_n_records=2)
    9
    """
    if stage != "fit" or every_n_records == 1:
        return max_activation_bytes
    recorded = (epoch + 1) // every_n_epochs - 1  # 0 for the first recorded epoch
    last = max_epochs is not None and epoch == max_epochs - 1
    if last or recorded % every_n_records == 0:
        return max_activation_bytes
    return 0


def trainer_stage(trainer: pl.Trainer) -> str:
    """Which evaluation runs: validation in fit (with its sanity check), validate, test."""
    if trainer.state.fn == TrainerFn.TESTING:
        return "test"
    if trainer.state.fn == TrainerFn.VALIDATING:
        return "validate"
    return "fit"


def epoch_mode(
    stage: str,
    stages: Sequence[str],
    *,
    sanity_checking: bool,
    fast_dev_run: Any,
    record_fast_dev_run: bool,
    epoch: int,
    every_n_epochs: int,
    checked: bool,
) -> str | None:
    """What an evaluation epoch does: ``"record"``, only ``"check"``, or nothing (None)."""
    if stage not in stages:
        return None
    if sanity_checking:
        return "check"
    if fast_dev_run and not record_fast_dev_run:
        return "check"
    if stage == "fit" and (epoch + 1) % every_n_epochs != 0:
        # With num_sanity_val_steps=0 the first validation still runs the checks.
        return None if checked else "check"
    return "record"


def named_loaders(
    dataloaders: Any, names: Sequence[str] | None = None, stage: str = "fit"
) -> list[tuple[str, Any]]:
    """(name, loader) per dataloader, in dataloader-index order: dict keys, else
    ``names`` (``dataset_names=``), else ``dataset_0..n``."""
    if isinstance(dataloaders, Mapping):
        if names is not None:
            raise MisconfigurationException(
                f"DeephysCallback(dataset_names={list(names)}) names list dataloaders, but the "
                f"{LOADER_KIND[stage]} dataloaders are a dict: its keys "
                f"{[str(k) for k in dataloaders]} name them. Drop dataset_names=."
            )
        return [(str(k), v) for k, v in dataloaders.items()]
    if isinstance(dataloaders, Sequence) and not isinstance(dataloaders, (str, bytes)):
        loaders = list(dataloaders)
    else:
        loaders = [dataloaders]
    if names is None:
        return [(f"dataset_{i}", loader) for i, loader in enumerate(loaders)]
    if len(names) != len(loaders):
        raise MisconfigurationException(
            f"DeephysCallback(dataset_names={list(names)}) names {len(names)} datasets, but "
            f"there are {len(loaders)} {LOADER_KIND[stage]} dataloaders; give one name each."
        )
    return list(zip(names, loaders, strict=True))


def check_loader_names(names: list[str], stage: str) -> None:
    """Dataset names must be non-empty and stay distinct in the record and in tags."""
    kind = LOADER_KIND[stage]
    if "" in names:
        raise MisconfigurationException(
            f"DeephysCallback: a {kind} dataloader is named '' (an empty dict key); give "
            f"it a name. Names: {names}"
        )
    for name in names:
        _check_name_fits(name, kind)
    seen: dict[str, str] = {}
    for name in names:
        tag = scalar_tag("x", dataset=name)  # "/" is escaped in tags
        if tag in seen or name in seen.values():
            other = seen.get(tag, name)
            raise MisconfigurationException(
                f"DeephysCallback: the {kind} dataloaders {other!r} and {name!r} would be "
                "recorded under one name (dict keys become strings; '/' is written as "
                f"'%2F' in tags). Rename one. Names: {names}"
            )
        seen[tag] = name


def _check_name_fits(name: str, kind: str) -> None:
    """A name must be text the log can hold: UTF-8 (no lone surrogate, which no tag
    can hold) and at most ``MAX_NAME_CONTENT_BYTES`` in a plugin content. Long names
    are fine otherwise: files made from them hold a prefix and a hash
    (``metadata.asset_name_part``), the record and the tags the whole name."""
    shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MisconfigurationException(
            f"DeephysCallback: the {kind} dataloader {shown!r} has a name UTF-8 cannot "
            "encode (a lone surrogate); rename it."
        ) from None
    size = name_content_bytes(name)
    if size > MAX_NAME_CONTENT_BYTES:
        raise MisconfigurationException(
            f"DeephysCallback: the {kind} dataloader {shown!r} has a name of {size} bytes "
            f"in the log's JSON (non-ASCII characters take 6 or 12), over "
            f"{MAX_NAME_CONTENT_BYTES}; give it a shorter name."
        )


def ind_first(names: list[str], ind: str | int | None, stage: str = "fit") -> list[int]:
    """Dataloader indices with the in-distribution one first."""
    kind = LOADER_KIND[stage]
    if ind is None:
        ind_idx = 0
    elif isinstance(ind, int):
        if not 0 <= ind < len(names):
            raise MisconfigurationException(
                f"DeephysCallback(ind={ind}) is not a dataloader index; there are "
                f"{len(names)} {kind} dataloaders: {names}"
            )
        ind_idx = ind
    else:
        if ind not in names:
            raise MisconfigurationException(
                f"DeephysCallback(ind={ind!r}) names no {kind} dataloader; names: {names}"
            )
        ind_idx = names.index(ind)
    return [ind_idx] + [i for i in range(len(names)) if i != ind_idx]


def sampling_plan(loader: Any, trainer: pl.Trainer, max_images: int | None) -> SamplingPlan:
    """What this process keeps of ``loader``'s dataset; refuses samplers whose images
    cannot be put back in dataset order across processes."""
    if isinstance(getattr(loader, "sampler", None), RandomSampler):
        rank_zero_warn(
            "DeephysCallback: a validation dataloader shuffles (shuffle=True). Images are "
            "recorded in the order they come, so image indices, the max_images subset and "
            "the thumbnails change every epoch. Use shuffle=False for validation."
        )
    dataset = getattr(loader, "dataset", None)
    try:
        num_images = len(dataset) if dataset is not None else None
    except TypeError:  # an IterableDataset without a length
        num_images = None
    world_size = trainer.world_size
    if world_size > 1:
        sampler = getattr(loader, "sampler", None)
        if not (
            type(sampler) is DistributedSampler and not sampler.shuffle and num_images is not None
        ):
            raise MisconfigurationException(
                "DeephysCallback gathers validation rows across processes in dataset order, "
                "which needs Lightning's DistributedSampler without shuffling on a dataset "
                f"with a length; got sampler {type(sampler).__name__}. Keep "
                "Trainer(use_distributed_sampler=True) and an unshuffled map-style dataset."
            )
    return SamplingPlan.for_rank(num_images, world_size, trainer.global_rank, max_images)


def datamodule_class_names(trainer: pl.Trainer) -> list[str] | None:
    """The datamodule's ``class_names`` or ``classes``, when it has such a list."""
    datamodule = getattr(trainer, "datamodule", None)
    for attribute in ("class_names", "classes"):
        names = getattr(datamodule, attribute, None)
        if isinstance(names, Sequence) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def record_position(
    trainer: pl.Trainer, stage: str, loaded_position: tuple[int, int] | None
) -> tuple[int, int]:
    """(step, epoch) of this epoch's record: the trainer's in fit, the loaded
    checkpoint's in validate and test (the trainer's when none was loaded)."""
    if stage != "fit":
        position = loaded_position
        if position is None and trainer.ckpt_path:
            try:
                position = checkpoint_position(load_checkpoint_header(str(trainer.ckpt_path)))
            except Exception as error:  # any reader error: record at the trainer's step
                rank_zero_warn(
                    f"DeephysCallback: could not read the step of checkpoint "
                    f"{trainer.ckpt_path!r} ({type(error).__name__}: {error}); this "
                    f"{stage} is recorded at the trainer's step {trainer.global_step}."
                )
        if position is not None:
            return position
    return trainer.global_step, trainer.current_epoch


def checkpoint_position(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    """(global_step, epoch) a Lightning checkpoint was saved at, if it says."""
    try:
        return int(checkpoint["global_step"]), int(checkpoint["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def load_checkpoint_header(path: str) -> dict[str, Any]:
    """A checkpoint's contents without reading its tensors into memory (for checkpoints
    whose callbacks were not restored, as weights-only ones)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (OSError, RuntimeError, ValueError):
        from lightning.fabric.utilities.cloud_io import _load

        return _load(path, map_location="cpu")
