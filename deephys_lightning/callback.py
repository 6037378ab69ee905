"""DeephysCallback: record a layer's activations on InD and OOD validation sets.

Example::

    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
    from deephys_lightning import DeephysCallback

    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[DeephysCallback(layer="backbone.fc1", class_names=CLASSES)],
        logger=TensorBoardLogger("lightning_logs"),
    )
    trainer.fit(model, train_loader,
                val_dataloaders={"colored": ind, "permuted": ood1, "arbitrary": ood2})
    # tensorboard --logdir lightning_logs  ->  the "Deephys" tab
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from typing_extensions import override

from deephys_lightning.capture import reduce_activations, split_batch, to_thumbnails
from deephys_lightning.summary import (
    DatasetRecording,
    EventFileSink,
    FileWriterSink,
    SummarySink,
    write_record,
)
from tb_plugin.metadata import Record


class DeephysCallback(Callback):
    r"""Record the activations of a layer on every validation dataloader for Deephys.

    Validation dataloader 0 (or the one named by ``ind``) is the in-distribution (InD)
    set; all other validation dataloaders are out-of-distribution (OOD) sets. Datasets
    are named by the keys when ``val_dataloaders`` is a dict, else ``dataset_0..n``.

    During a recorded validation epoch (never the sanity check or ``fast_dev_run``) a
    forward hook on ``layer`` keeps, for each image, one activation per neuron: the
    output after ReLU (``relu=True``), averaged over spatial dims ``(B, C, H, W)`` or
    tokens ``(B, T, C)``. The prediction is the arg-max over the last dim of the
    output of ``logits_layer`` (by default, the LightningModule's own ``forward``
    output, so ``validation_step`` must call ``self(x)``), and the label comes from
    the batch. At the end of the epoch rank zero writes everything, with thumbnails
    of each dataset's images the first time, into the TensorBoardLogger's event file
    (or an event file in ``trainer.default_root_dir`` when there is no such logger).

    Args:
        layer: dotted name of the module to record, as in ``model.named_modules()``.
        class_names: one name per class; default ``"0"``, ``"1"``, ... up to the
            number of logits.
        ind: name or dataloader index of the in-distribution set (default: the first).
        every_n_epochs: record every n-th validation epoch (``(epoch + 1) % n == 0``);
            ``trainer.validate`` always records.
        logits_layer: dotted name of the module whose output holds the class scores;
            ``None`` takes the LightningModule's ``forward`` output.
        relu: clip negative activations to 0 before averaging.
        top_k: how many top images per neuron are precomputed for the views.
        thumbnail_size: longest side, in pixels, of the stored thumbnails.
        input_key: where the inputs are in a batch: a position for tuple batches
            (default 0), a key for dict batches (default: ``image``/``input``/``x``...).
        target_key: where the labels are (default position 1, or ``label``/``target``/``y``).

    Raises:
        MisconfigurationException: on invalid arguments, or at ``setup`` when ``layer``
            is not a module of the model (the message lists the closest names).
    """

    def __init__(
        self,
        layer: str,
        class_names: Sequence[str] | None = None,
        *,
        ind: str | int | None = None,
        every_n_epochs: int = 1,
        logits_layer: str | None = None,
        relu: bool = True,
        top_k: int = 32,
        thumbnail_size: int = 64,
        input_key: str | int | None = None,
        target_key: str | int | None = None,
    ) -> None:
        if not isinstance(layer, str) or not layer:
            raise MisconfigurationException(
                f"DeephysCallback(layer=...) must be a dotted module name such as "
                f"'backbone.fc1', got {layer!r}"
            )
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise MisconfigurationException(
                    "DeephysCallback(class_names=...) must be a list of strings, got "
                    f"{class_names!r}"
                )
            if len(class_names) == 0:
                raise MisconfigurationException(
                    "DeephysCallback(class_names=...) is empty; give one name per class"
                )
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise MisconfigurationException(
                f"DeephysCallback(every_n_epochs=...) must be an integer >= 1, "
                f"got {every_n_epochs!r}"
            )
        if not isinstance(top_k, int) or top_k < 1:
            raise MisconfigurationException(
                f"DeephysCallback(top_k=...) must be an integer >= 1, got {top_k!r}"
            )
        if not isinstance(thumbnail_size, int) or thumbnail_size < 8:
            raise MisconfigurationException(
                f"DeephysCallback(thumbnail_size=...) must be an integer >= 8, "
                f"got {thumbnail_size!r}"
            )
        if ind is not None and not isinstance(ind, (str, int)):
            raise MisconfigurationException(
                f"DeephysCallback(ind=...) must be a dataset name or a dataloader index, "
                f"got {ind!r}"
            )
        self.layer = layer
        self.class_names = list(class_names) if class_names is not None else None
        self.ind = ind
        self.every_n_epochs = every_n_epochs
        self.logits_layer = logits_layer
        self.relu = relu
        self.top_k = top_k
        self.thumbnail_size = thumbnail_size
        self.input_key = input_key
        self.target_key = target_key

        self._layer_module: torch.nn.Module | None = None
        self._logits_module: torch.nn.Module | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._recording = False
        self._pending_acts: list[torch.Tensor] = []
        self._pending_logits: list[torch.Tensor] = []
        self._buffers: dict[int, dict[str, list[torch.Tensor]]] = {}
        self._num_classes = 0
        # Per log directory written to: the last recorded step and the datasets whose
        # thumbnails are there already (a reused callback may write to several).
        self._written: dict[str, _WrittenState] = {}
        self._destination = ""
        self._names: list[str] = []
        # An event file of our own, only when there is no TensorBoardLogger to write through.
        self._own_sink: EventFileSink | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, ind=self.ind)

    # -- set-up ------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise MisconfigurationException(
                "DeephysCallback does not gather across processes yet: run the recorded "
                f"validation on one device (this trainer has world_size={trainer.world_size})."
            )
        self._layer_module = _find_module(pl_module, self.layer, "layer")
        self._logits_module = (
            pl_module
            if self.logits_layer is None
            else _find_module(pl_module, self.logits_layer, "logits_layer")
        )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()
        if self._own_sink is not None:
            self._own_sink.close()
            self._own_sink = None

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()
        self._recording = False

    # -- validation hooks ----------------------------------------------------------

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recording = self._should_record(trainer)
        if not self._recording:
            return
        self._buffers = {}
        self._num_classes = 0
        self._names = _dataloader_names(trainer.val_dataloaders)
        self._destination = _log_dir(trainer)
        self._remove_hooks()
        assert self._layer_module is not None and self._logits_module is not None
        self._handles.append(self._layer_module.register_forward_hook(self._on_layer_output))
        self._handles.append(self._logits_module.register_forward_hook(self._on_logits_output))

    @override
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._pending_acts = []
        self._pending_logits = []

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._recording:
            self._keep_batch(batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._recording:
            return
        self._remove_hooks()
        self._recording = False
        self._write(trainer)

    # -- resume ----------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "written": {
                log_dir: {"last_step": state.last_step, "thumbnails": sorted(state.thumbnails)}
                for log_dir, state in self._written.items()
            }
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._written = {
            log_dir: _WrittenState(int(state["last_step"]), set(state["thumbnails"]))
            for log_dir, state in state_dict.get("written", {}).items()
        }

    # -- workers -----------------------------------------------------------------------

    def _should_record(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return False
        if trainer.state.fn == TrainerFn.VALIDATING:  # trainer.validate(...): always record
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _on_layer_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._recording:
            acts = reduce_activations(output, relu=self.relu, layer=self.layer)
            self._pending_acts.append(acts.to("cpu", torch.float16))

    def _on_logits_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not self._recording:
            return
        if not isinstance(output, torch.Tensor):
            where = (
                "the LightningModule's forward"
                if self.logits_layer is None
                else (f"logits_layer {self.logits_layer!r}")
            )
            raise TypeError(
                f"DeephysCallback takes predictions from {where}, which returned a "
                f"{type(output).__name__}; set logits_layer= to the module that outputs the "
                "class scores (B, num_classes)."
            )
        self._pending_logits.append(output.detach().float().cpu())

    def _keep_batch(self, batch: Any, dataloader_idx: int) -> None:
        x, y = split_batch(batch, self.input_key, self.target_key)
        batch_size = len(y)
        if not self._pending_acts:
            raise RuntimeError(
                f"DeephysCallback: layer {self.layer!r} was not called during validation "
                f"batch of dataloader {dataloader_idx}; does validation_step run it?"
            )
        if not self._pending_logits:
            raise RuntimeError(
                "DeephysCallback: no class scores were seen during a validation batch. "
                "Call self(x) in validation_step, or set logits_layer= to the classifier module."
            )
        acts = torch.cat(self._pending_acts)
        logits = torch.cat(self._pending_logits)
        if len(acts) != batch_size or len(logits) != batch_size:
            raise RuntimeError(
                f"DeephysCallback: a batch of {batch_size} labels produced {len(acts)} rows at "
                f"layer {self.layer!r} and {len(logits)} rows of class scores; each must run "
                "once per batch."
            )
        buffer = self._buffers.setdefault(
            dataloader_idx, {"acts": [], "labels": [], "preds": [], "thumbs": []}
        )
        buffer["acts"].append(acts)
        buffer["labels"].append(y.detach().cpu().to(torch.int64))
        buffer["preds"].append(logits.reshape(batch_size, -1).argmax(dim=-1))
        self._num_classes = max(self._num_classes, logits.reshape(batch_size, -1).shape[-1])
        if not self._has_thumbnails(dataloader_idx):
            buffer["thumbs"].append(to_thumbnails(x, self.thumbnail_size))
        self._pending_acts = []
        self._pending_logits = []

    def _has_thumbnails(self, dataloader_idx: int) -> bool:
        written = self._written.get(self._destination)
        name = self._names[dataloader_idx] if dataloader_idx < len(self._names) else None
        return written is not None and name in written.thumbnails

    def _write(self, trainer: pl.Trainer) -> None:
        if not self._buffers:
            return
        names = self._names
        written = self._written.setdefault(self._destination, _WrittenState())
        step = trainer.global_step
        if step <= written.last_step:
            self._buffers = {}
            rank_zero_warn(
                f"DeephysCallback: {self._destination} already holds a record at step "
                f"{written.last_step}; this validation at step {step} is not recorded, because "
                "TensorBoard keeps one record per step and drops data written after a later "
                "step. Log to a new version (a new TensorBoardLogger) to record it."
            )
            return
        order = _ind_first(names, self.ind)
        recordings: dict[str, DatasetRecording] = {}
        for idx in order:
            buffer = self._buffers.get(idx)
            if buffer is None:
                continue
            name = names[idx]
            recordings[name] = DatasetRecording(
                labels=torch.cat(buffer["labels"]).numpy(),
                predictions=torch.cat(buffer["preds"]).numpy(),
                activations={self.layer: torch.cat(buffer["acts"]).numpy()},
                thumbnails=None
                if name in written.thumbnails
                else torch.cat(buffer["thumbs"]).numpy(),
            )
        self._buffers = {}
        class_names = self._class_names(self._num_classes, recordings)
        record = Record(
            step=step,
            epoch=trainer.current_epoch,
            layers=(self.layer,),
            datasets=tuple(recordings),
            class_names=tuple(class_names),
            num_images={name: len(rec.labels) for name, rec in recordings.items()},
            top_k=self.top_k,
            relu=self.relu,
        )
        self._write_rank_zero(trainer, record, recordings)
        written.thumbnails.update(
            name for name, rec in recordings.items() if rec.thumbnails is not None
        )
        written.last_step = step

    def _class_names(
        self, num_classes: int, recordings: Mapping[str, DatasetRecording]
    ) -> list[str]:
        max_label = max(
            (int(r.labels.max()) for r in recordings.values() if len(r.labels)), default=-1
        )
        if self.class_names is None:
            return [str(i) for i in range(max(num_classes, max_label + 1))]
        if max_label >= len(self.class_names):
            raise MisconfigurationException(
                f"DeephysCallback(class_names=...) has {len(self.class_names)} names, but the "
                f"validation labels go up to {max_label}; give one name per class."
            )
        return self.class_names

    @rank_zero_only
    def _write_rank_zero(
        self, trainer: pl.Trainer, record: Record, recordings: dict[str, DatasetRecording]
    ) -> None:
        write_record(self._sink_for(trainer), record, recordings)

    def _sink_for(self, trainer: pl.Trainer) -> SummarySink:
        """The TensorBoardLogger's writer (fetched anew: a finished fit closes it), else ours."""
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                get_file_writer = getattr(logger.experiment, "_get_file_writer", None)
                if get_file_writer is not None:  # torch.utils.tensorboard reopens on demand
                    return FileWriterSink(get_file_writer())
                return self._event_file_sink(logger.log_dir)
        return self._event_file_sink(trainer.default_root_dir)

    def _event_file_sink(self, log_dir: str) -> EventFileSink:
        if self._own_sink is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            os.makedirs(log_dir, exist_ok=True)
            self._own_sink = EventFileSink(EventFileWriter(log_dir, filename_suffix=".deephys"))
        return self._own_sink

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclasses.dataclass
class _WrittenState:
    last_step: int = -1
    thumbnails: set[str] = dataclasses.field(default_factory=set)


def _log_dir(trainer: pl.Trainer) -> str:
    """Where records go: the TensorBoardLogger's run directory, else the root dir."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return os.path.abspath(logger.log_dir)
    return os.path.abspath(trainer.default_root_dir)


def _find_module(pl_module: torch.nn.Module, name: str, param: str) -> torch.nn.Module:
    modules = dict(pl_module.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.3)
    hint = close or names[:10]
    raise MisconfigurationException(
        f"DeephysCallback({param}={name!r}): {type(pl_module).__name__} has no such module. "
        f"Closest module names: {', '.join(hint) or '(the model has no submodules)'}"
    )


def _dataloader_names(dataloaders: Any) -> list[str]:
    if isinstance(dataloaders, Mapping):
        return [str(k) for k in dataloaders]
    if isinstance(dataloaders, Sequence) and not isinstance(dataloaders, (str, bytes)):
        return [f"dataset_{i}" for i in range(len(dataloaders))]
    return ["dataset_0"]


def _ind_first(names: list[str], ind: str | int | None) -> list[int]:
    """Dataloader indices with the in-distribution one first."""
    if ind is None:
        ind_idx = 0
    elif isinstance(ind, int):
        if not 0 <= ind < len(names):
            raise MisconfigurationException(
                f"DeephysCallback(ind={ind}) is not a dataloader index; there are "
                f"{len(names)} validation dataloaders: {names}"
            )
        ind_idx = ind
    else:
        if ind not in names:
            raise MisconfigurationException(
                f"DeephysCallback(ind={ind!r}) names no validation dataloader; names: {names}"
            )
        ind_idx = names.index(ind)
    return [ind_idx] + [i for i in range(len(names)) if i != ind_idx]
