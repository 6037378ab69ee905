"""DeephysCallback: record layer activations on InD and OOD validation sets.

Example::

    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
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

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch.utils.data import DistributedSampler, RandomSampler
from typing_extensions import override

from deephys_lightning import detection, event_files, fast_crc, options, spatial_maps, writing
from deephys_lightning import rows as row_columns
from deephys_lightning.capture import (
    Denormalize,
    OutputSelector,
    Reduction,
    denormalize_inputs,
    input_fingerprints,
    reduce_activations,
    select_output,
    split_batch,
    to_thumbnails,
    top_predictions,
)
from deephys_lightning.gather import DEFAULT_CHUNK_BYTES, gather_rows
from deephys_lightning.log_state import LogState
from deephys_lightning.rows import DEFAULT_MAX_DEVICE_BYTES, DeviceBudget, RowBuffer, Rows
from deephys_lightning.sampling import SamplingPlan
from deephys_lightning.summary import (
    EventFileSink,
    FileWriterSink,
    SummarySink,
    write_record,
    writes_matrix,
)
from tensorboard_plugin_deephys.log import assets, metadata, storage
from tensorboard_plugin_deephys.log.metadata import Record

DEFAULT_MAX_ACTIVATION_BYTES = 32 * 1024 * 1024
STAGES = options.STAGES  # the evaluations that can record
_LOADER_KIND = {"fit": "validation", "validate": "validation", "test": "test"}


class GivenClassNames(NamedTuple):
    names: Sequence[str]
    source: str  # how the user gave them, for messages

    def check(self, labels: torch.Tensor, where: str) -> None:
        """Every label of ``where`` must have a name (host ``labels``)."""
        if len(labels) and int(labels.max()) >= len(self.names):
            raise MisconfigurationException(
                f"{self.source} has {len(self.names)} names, but {where} has label "
                f"{int(labels.max())}; give one name per class."
            )


class DeephysCallback(Callback):
    r"""Record the activations of layers on every validation (and test) dataloader for
    Deephys.

    Dataloader 0 (or the one named by ``ind``) is the in-distribution (InD) set; all
    other dataloaders are out-of-distribution (OOD) sets. Datasets are named by the
    keys when the dataloaders are a dict, by ``dataset_names`` for a list, else
    ``dataset_0..n``. Validation during ``fit``, ``trainer.validate`` and
    ``trainer.test`` record (``stages``); outside ``fit`` a record is made at the loaded
    checkpoint's step and epoch.

    The sanity check (and, with ``num_sanity_val_steps=0``, the first batch of each
    dataloader of the first validation) runs every check of the recording path and
    writes nothing, so a misconfiguration stops the run before the first training
    batch. During a recorded epoch (never the sanity check, nor ``fast_dev_run``
    unless ``record_fast_dev_run``), forward hooks keep, for each image and layer, one
    activation per neuron: the output after ReLU (``relu=True``), averaged over spatial
    dims ``(B, C, H, W)`` or tokens ``(B, T, C)``. The prediction is the arg-max over
    the last dim of the output of ``logits_layer`` (by default the LightningModule's
    own ``forward``, so ``validation_step`` must call ``self(x)``); the label comes from
    the batch. At the end of the epoch the rows of all processes are gathered in
    dataset order and rank zero writes them, with the scores and view data, into the
    TensorBoardLogger's event file (or an event file in ``trainer.default_root_dir``).

    Args:
        layer: dotted name of the module to record, as in ``model.named_modules()``.
        class_names: one name per class. Default: the datamodule's ``class_names`` or
            ``classes`` attribute, else ``"0"``, ``"1"``, ... up to the number of logits.
        layers: several module names instead of ``layer``.
        ind: name or dataloader index of the in-distribution set (default: the first).
        dataset_names: names of the dataloaders when they are a list (or one loader),
            in order; a dict's keys name them otherwise.
        stages: which evaluations record: ``"fit"`` (validation during ``fit``),
            ``"validate"`` (``trainer.validate``), ``"test"`` (``trainer.test``).
        every_n_epochs: record every n-th validation epoch (``(epoch + 1) % n == 0``);
            ``trainer.validate`` always records.
        logits_layer: dotted name of the module whose output holds the class scores;
            ``None`` takes the LightningModule's ``forward`` output.
        output_selector: which tensor to record when a layer returns a tuple, list or
            dict: an index, a key, or a function of the output; a dict maps layer names
            to selectors.
        reduction: ``"auto"`` (mean over spatial dims or tokens), ``"none"`` (outputs
            must be ``(B, M)``), or a function from the output to ``(B, M)``.
        relu: clip negative activations to 0 before reducing.
        top_k: how many top images per neuron are precomputed for the views.
        spatial_maps: also keep, for each neuron's top images, where in the image it
            fires: its map over the spatial dims ``(B, C, H, W)`` or tokens
            ``(B, T, C)`` of a layer recorded with ``reduction="auto"``, after the
            ReLU, average-pooled to at most 7 x 7 cells (49 tokens), float16. A
            running top-k on the device (``M x top_k`` maps per layer and dataset),
            no second pass. Layers with flat outputs, and any layer with
            ``reduction="none"`` or a function, have none.
        max_images: record at most this many images per dataset: an evenly spread,
            deterministic subset (the same images every epoch).
        max_activation_bytes: the full float16 activation matrix of a layer and dataset
            is written while it is at most this large; above, only the precomputed view
            data and scores are (they never need it). ``None``: always write it.
        record_logits: also write each image's classifier outputs (float32 ``[N, C]``),
            which :func:`deephys_lightning.export.export_step` needs for the original
            Deephys app. ``None`` (default): while the full activation matrix is written.
            Each image's top 5 classes and their probabilities are written either way.
        thumbnails: store an image per recorded image (needs image inputs).
        thumbnail_size: longest side, in pixels, of the stored thumbnails.
        denormalize: ``(mean, std)`` per channel, or a function, that turns model
            inputs back into displayable images for the thumbnails.
        input_key: where the inputs are in a batch: a position for tuple batches
            (default 0), a key for dict batches (default: ``image``/``input``/``x``...).
        target_key: where the labels are (default position 1, or ``label``/``target``/``y``).
        unpack_batch: a function ``batch -> (inputs, labels)``, for any other batch layout.
        record_fast_dev_run: record under ``Trainer(fast_dev_run=...)`` too.
        ood_detectors: which OOD detectors to evaluate, InD against each OOD set, at
            every recorded step (``"msp"``, ``"max_logit"``, ``"energy"`` on the logits;
            ``"mahalanobis"``, ``"knn"`` on each recorded layer's features; see
            ``deephys_lightning.detection``). Default: the three on the logits, which
            cost milliseconds; ``()`` or None: none.
        log_scalars: also log the headline numbers as scalars for TensorBoard's
            Scalars tab (``deephys/...``); the Deephys tab does not need them.
        log_histograms: also log per-neuron novelty and spurious histograms.
        strict: raise when writing a record fails (a full disk, an unwritable folder,
            unexpected data) instead of warning and going on training without that
            record. For CI of your own code.
        refresh_thumbnails: keep (gather, digest, write if new) the thumbnails of every
            recorded epoch. By default they are resized on the device every recorded
            epoch, but kept only on the first recorded epoch of each dataset in each
            ``fit``, ``validate`` or ``test`` call, and on an epoch whose images differ
            from the last written one's (each image's input fingerprint, a projection
            computed on the device, compared at the end of the epoch).
        max_device_buffer_bytes: the epoch's rows (all datasets together) are kept on
            the recording device while they take at most this much (default 4 GiB);
            the columns beyond it, and thumbnails always, go to pinned host memory
            with non-blocking copies, batch by batch.
        gather_chunk_bytes: under several processes, rows are gathered column by
            column in chunks of at most this many bytes per process (default 256 MiB;
            the collective's result is ``world_size`` times that, on the root device).

    Raises:
        MisconfigurationException: on invalid arguments, or at ``setup`` when a layer is
            not a module of the model (the message lists the closest names).
    """

    def __init__(
        self,
        layer: str | None = None,
        class_names: Sequence[str] | None = None,
        *,
        layers: Sequence[str] | None = None,
        ind: str | int | None = None,
        dataset_names: Sequence[str] | None = None,
        stages: Sequence[str] = STAGES,
        every_n_epochs: int = 1,
        logits_layer: str | None = None,
        output_selector: OutputSelector | Mapping[str, OutputSelector] | None = None,
        reduction: Reduction = "auto",
        relu: bool = True,
        top_k: int = 32,
        spatial_maps: bool = True,
        max_images: int | None = None,
        max_activation_bytes: int | None = DEFAULT_MAX_ACTIVATION_BYTES,
        record_logits: bool | None = None,
        thumbnails: bool = True,
        thumbnail_size: int = 64,
        denormalize: Denormalize | None = None,
        input_key: str | int | None = None,
        target_key: str | int | None = None,
        unpack_batch: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        record_fast_dev_run: bool = False,
        ood_detectors: Sequence[str] | None = detection.DEFAULT_DETECTORS,
        log_scalars: bool = True,
        log_histograms: bool = True,
        strict: bool = False,
        refresh_thumbnails: bool = False,
        max_device_buffer_bytes: int = DEFAULT_MAX_DEVICE_BYTES,
        gather_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.layers = options.check_layers(layer, layers)
        self.class_names = options.check_names("class_names", class_names)
        self.ind = options.check_ind(ind)
        self.dataset_names = options.check_names("dataset_names", dataset_names)
        self.stages = options.check_stages(stages)
        self.every_n_epochs = options.check_int("every_n_epochs", every_n_epochs)
        self.logits_layer = logits_layer
        self.output_selector = options.check_output_selector(output_selector, self.layers)
        self.reduction = options.check_reduction(reduction)
        self.relu = relu
        self.top_k = options.check_int("top_k", top_k)
        self.spatial_maps = options.check_flag("spatial_maps", spatial_maps)
        self.max_images = options.check_int("max_images", max_images, optional=True)
        self.max_activation_bytes = options.check_int(
            "max_activation_bytes", max_activation_bytes, minimum=0, optional=True
        )
        self.record_logits = options.check_record_logits(record_logits)
        self.thumbnails = thumbnails
        self.thumbnail_size = options.check_int("thumbnail_size", thumbnail_size, minimum=8)
        self.denormalize = options.check_denormalize(denormalize)
        self.input_key = input_key
        self.target_key = target_key
        self.unpack_batch = unpack_batch
        self.record_fast_dev_run = record_fast_dev_run
        self.ood_detectors = options.check_detectors(ood_detectors)
        self.log_scalars = options.check_flag("log_scalars", log_scalars)
        self.log_histograms = options.check_flag("log_histograms", log_histograms)
        self.strict = options.check_flag("strict", strict)
        self.refresh_thumbnails = options.check_flag("refresh_thumbnails", refresh_thumbnails)
        self.max_device_buffer_bytes = options.check_int(
            "max_device_buffer_bytes", max_device_buffer_bytes, minimum=0
        )
        self.gather_chunk_bytes = options.check_int("gather_chunk_bytes", gather_chunk_bytes)

        self._warned_failures: set[str] = set()
        self._layer_modules: dict[str, torch.nn.Module] = {}
        self._logits_module: torch.nn.Module | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # None: hooks idle; "check": run every check on the first batch of each
        # dataloader, keep nothing; "record": keep every batch.
        self._mode: str | None = None
        self._stage = "fit"
        self._checked = False  # the recording path's checks have passed once
        self._checked_loaders: set[int] = set()
        self._warned_one_loader = False
        self._loaded_position: tuple[int, int] | None = None  # (global_step, epoch)
        self._position: tuple[int, int] = (0, 0)  # where this epoch's record goes
        self._capturing = False  # whether the hooks keep this batch's outputs
        self._known_class_names: GivenClassNames | None = None  # found at epoch start
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._pending_logits: list[torch.Tensor] = []
        self._pending_maps: dict[str, list[torch.Tensor]] = {}
        self._loader_idx = 0  # the dataloader of the batch being captured
        self._buffers: dict[int, RowBuffer] = {}
        # Per (dataloader, layer) with maps: each neuron's top images so far, on the device.
        self._top_maps: dict[tuple[int, str], spatial_maps.RunningTopMaps] = {}
        self._device_budget = DeviceBudget(max_device_buffer_bytes)
        # Each dataset's input fingerprints at its last recorded epoch (CPU, dataset
        # order): its thumbnails are kept again only when they change.
        self._fingerprints: dict[str, torch.Tensor] = {}
        self._new_fingerprints: dict[str, torch.Tensor] = {}  # this epoch's, until written

        self._plans: dict[int, SamplingPlan] = {}
        self._seen: dict[int, int] = {}
        self._thumb_shapes: dict[int, tuple[int, int]] = {}
        self._num_classes = 0
        self._names: list[str] = []
        self._destination = ""
        # What each log directory written to holds (a reused callback may write to several).
        self._log_states: dict[str, LogState] = {}
        self._scanned: set[str] = set()  # directories whose events were scanned for steps
        # Event files of our own, by directory: without a TensorBoardLogger, and for
        # evaluations that go to a run of their own.
        self._own_sinks: dict[str, EventFileSink] = {}
        # Without a logger that has a directory: the version directory claimed for this
        # callback's records (kept across its fit, validate and test calls).
        self._own_log_dir: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, ind=self.ind)

    # -- set-up ------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        fast_crc.install()  # event framing at C speed, same bytes
        self._loaded_position = None
        self._checked = False
        self._fingerprints = {}  # each fit / validate / test call keeps its thumbnails
        self._layer_modules = {name: _find_module(pl_module, name, "layer") for name in self.layers}
        self._logits_module = (
            pl_module
            if self.logits_layer is None
            else _find_module(pl_module, self.logits_layer, "logits_layer")
        )
        if trainer.loggers and _tensorboard_logger(trainer) is None:
            where = _logger_dir(trainer)
            rank_zero_warn(
                "DeephysCallback writes TensorBoard events, and this Trainer has no "
                "TensorBoardLogger: they go to an event file of their own in "
                + (
                    f"the logger's directory {where!r}"
                    if where
                    else f"a new lightning_logs/version_N under {trainer.default_root_dir!r}"
                )
                + " (tensorboard --logdir on its parent shows it). Add a TensorBoardLogger "
                "to keep them beside your training curves."
            )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()
        for sink in self._own_sinks.values():
            sink.close()
        self._own_sinks = {}

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()
        self._mode = None
        self._buffers = {}
        self._top_maps = {}

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Where the loaded weights come from: evaluations outside fit record there.
        self._loaded_position = _checkpoint_position(checkpoint)

    # -- evaluation hooks: validation (in fit and trainer.validate) and test ---------

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start(trainer, trainer.val_dataloaders)

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start(trainer, trainer.test_dataloaders)

    @override
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_start(dataloader_idx)

    @override
    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_start(dataloader_idx)

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
        self._batch_end(batch, dataloader_idx)

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end(batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer)

    def _epoch_start(self, trainer: pl.Trainer, dataloaders: Any) -> None:
        self._stage = _stage(trainer)
        self._mode = self._mode_for(trainer)
        if self._mode is None:
            return
        named = _named_loaders(dataloaders, self.dataset_names, self._stage)
        self._names = [name for name, _ in named]
        _check_loader_names(self._names, self._stage)
        ind_idx = _ind_first(self._names, self.ind, self._stage)[0]  # a wrong ind= fails here
        if len(named) == 1 and not self._warned_one_loader:
            self._warned_one_loader = True
            rank_zero_warn(
                f"DeephysCallback: one {_LOADER_KIND[self._stage]} dataloader "
                f"({self._names[0]!r}), so there is no OOD set to compare it with: no "
                "novelty, spurious or detection scores. Pass a dict of dataloaders, "
                "e.g. {'mnist': ind_loader, 'rotated': ood_loader}."
            )
        self._known_class_names = self._class_names_given(trainer)
        self._destination = self._log_dir(trainer)
        if self._mode == "record":
            self._position = self._position_of(trainer)
        self._plans = {
            idx: _sampling_plan(loader, trainer, self.max_images)
            for idx, (_, loader) in enumerate(named)
        }
        self._dataset_sizes = {
            self._names[idx]: plan.num_images for idx, plan in self._plans.items()
        }
        if self._dataset_sizes[self._names[ind_idx]] == 0:
            raise MisconfigurationException(
                f"DeephysCallback: the in-distribution {_LOADER_KIND[self._stage]} dataloader "
                f"{self._names[ind_idx]!r} is empty; every score compares the other sets "
                "with it. Give it images, or name another dataloader with ind=."
            )
        self._buffers = {}
        self._top_maps = {}
        self._device_budget = DeviceBudget(self.max_device_buffer_bytes)  # for all sets
        self._seen = {}
        self._checked_loaders = set()
        self._num_classes = 0
        self._remove_hooks()
        for name, module in self._layer_modules.items():
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))
        assert self._logits_module is not None
        self._handles.append(self._logits_module.register_forward_hook(self._on_logits_output))

    def _batch_start(self, dataloader_idx: int) -> None:
        self._pending = {name: [] for name in self.layers}
        self._pending_logits = []
        self._pending_maps = {name: [] for name in self.layers}
        self._loader_idx = dataloader_idx
        # In check mode only each loader's first batch is captured (and checked).
        self._capturing = self._mode == "record" or (
            self._mode == "check" and dataloader_idx not in self._checked_loaders
        )

    def _batch_end(self, batch: Any, dataloader_idx: int) -> None:
        if self._capturing:
            self._keep_batch(batch, dataloader_idx, check_only=self._mode == "check")
            self._checked_loaders.add(dataloader_idx)
        self._capturing = False
        self._pending = {name: [] for name in self.layers}
        self._pending_logits = []
        self._pending_maps = {name: [] for name in self.layers}

    def _epoch_end(self, trainer: pl.Trainer) -> None:
        if self._mode is None:
            return
        mode, self._mode = self._mode, None
        self._capturing = False
        self._remove_hooks()
        self._checked = True
        if mode == "record":
            self._write(trainer)

    # -- resume ----------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"written": {d: s.to_dict() for d, s in self._log_states.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._log_states = {
            d: LogState.from_dict(d, raw) for d, raw in state_dict.get("written", {}).items()
        }

    # -- workers -----------------------------------------------------------------------

    def _mode_for(self, trainer: pl.Trainer) -> str | None:
        """What this evaluation epoch does: record, only check, or nothing."""
        if self._stage not in self.stages:
            return None
        if trainer.sanity_checking:
            return "check"
        if trainer.fast_dev_run and not self.record_fast_dev_run:
            return "check"
        if self._stage == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            # With num_sanity_val_steps=0 the first validation still runs the checks.
            return None if self._checked else "check"
        return "record"

    def _selector(self, layer: str) -> OutputSelector | None:
        if isinstance(self.output_selector, Mapping):
            return self.output_selector.get(layer)
        return self.output_selector

    def _layer_hook(self, layer: str) -> Callable:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self._capturing:
                selected = select_output(output, self._selector(layer), layer=layer)
                relu = self.relu
                if self._keeps_maps(selected):  # rectified once, for both
                    selected = selected.detach().float()
                    # A copy of our own: the model may change its output in place later.
                    selected = torch.relu(selected) if relu else selected.clone()
                    relu = False
                    state = self._top_maps.get((self._loader_idx, layer))
                    shape = None if state is None else state.map_shape  # the dataset's
                    self._pending_maps[layer].append(spatial_maps.pooled_maps(selected, shape))
                acts = reduce_activations(
                    selected, relu=relu, reduction=self.reduction, layer=layer
                )
                # Kept on the layer's device, as float16 (read back once, at the end).
                self._pending[layer].append(acts.to(torch.float16))

        return hook

    def _keeps_maps(self, output: Any) -> bool:
        """Whether a layer output's maps are kept (``spatial_maps``)."""
        return (
            self.spatial_maps
            and self.reduction == "auto"
            and isinstance(output, torch.Tensor)
            and spatial_maps.has_maps(output)
        )

    def _on_logits_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # The first output of the batch: under DDP in fit, Lightning runs validation_step
        # through the wrapped module's forward, so the LightningModule's hook also sees
        # validation_step's return value, after the self(x) inside it.
        if not self._capturing or self._pending_logits:
            return
        if not isinstance(output, torch.Tensor):
            where = (
                "the LightningModule's forward"
                if self.logits_layer is None
                else f"logits_layer {self.logits_layer!r}"
            )
            raise TypeError(
                f"DeephysCallback takes predictions from {where}, which returned a "
                f"{type(output).__name__}; set logits_layer= to the module that outputs the "
                "class scores (B, num_classes)."
            )
        self._pending_logits.append(output.detach().float())

    def _keep_batch(self, batch: Any, dataloader_idx: int, check_only: bool = False) -> None:
        """Check one batch's captured outputs, and keep its rows unless ``check_only``."""
        kind = _LOADER_KIND[self._stage]
        where = f"a {kind} batch of dataloader {dataloader_idx} ({self._names[dataloader_idx]!r})"
        if self.unpack_batch is not None:
            x, y = self.unpack_batch(batch)
            y = torch.as_tensor(y)
        else:
            x, y = split_batch(batch, self.input_key, self.target_key)
        batch_size = len(y)
        for layer, pending in self._pending.items():
            if not pending:
                raise MisconfigurationException(
                    f"DeephysCallback: layer {layer!r} did not run during {where}. Does "
                    f"{kind}_step call the model through the LightningModule (self(x)) so "
                    f"that {layer!r} runs? A module inside a torch.compile'd submodule never "
                    "reports its output: compile the LightningModule instead."
                )
        if not self._pending_logits:
            step = f"{kind}_step"
            raise MisconfigurationException(
                f"DeephysCallback: no class scores were seen during {where}: the "
                f"LightningModule's forward did not run. Call self(x) in {step} (not "
                "self.model(x)), or set logits_layer= to the module that outputs the class "
                "scores."
            )
        acts = {layer: torch.cat(p) for layer, p in self._pending.items()}
        logits = torch.cat(self._pending_logits).reshape(batch_size, -1)
        for layer, a in acts.items():
            if len(a) != batch_size:
                raise MisconfigurationException(
                    f"DeephysCallback: {where} has {batch_size} labels but layer {layer!r} "
                    f"produced {len(a)} rows; the layer must run once per batch, on the "
                    "batch's images."
                )
        if check_only:
            self._check_batch(x, y, where)
            return
        # The recorded path: nothing below reads a value back from the device. Which
        # rows are kept is known on the host (positions); ignored labels and label
        # ranges are handled at the end of the epoch, on all rows at once.
        device = logits.device
        self._num_classes = max(self._num_classes, logits.shape[-1])
        plan = self._plans.get(dataloader_idx) or SamplingPlan.for_rank(None, 1, 0, None)
        start = self._seen.get(dataloader_idx, 0)
        self._seen[dataloader_idx] = start + batch_size
        positions = plan.positions(start, batch_size)
        keep = plan.keep(positions)
        if not bool(keep.any()):  # a host tensor
            return
        top_classes, top_probabilities = top_predictions(logits, metadata.TOP_PREDICTIONS)
        columns = {
            row_columns.POSITIONS: positions,
            row_columns.LABELS: y.detach().to(torch.int64),
            row_columns.PREDS: logits.argmax(dim=-1),
            row_columns.TOP_CLASSES: top_classes,  # softmax in float32, on the device
            row_columns.TOP_PROBABILITIES: top_probabilities,
            **{row_columns.act_column(layer): a for layer, a in acts.items()},
        }
        if self.thumbnails:  # made on the device; kept only when new (see _write)
            thumbs = to_thumbnails(
                denormalize_inputs(x, self.denormalize),
                self.thumbnail_size,
                self._thumb_shapes.get(dataloader_idx),
            )
            self._thumb_shapes.setdefault(dataloader_idx, tuple(thumbs.shape[1:3]))
            columns[row_columns.THUMBS] = thumbs
        if self.thumbnails:
            columns[row_columns.FINGERPRINTS] = input_fingerprints(x)
        if self._keeps_logits(plan.recorded_images, acts):
            columns[row_columns.LOGITS] = logits
        if self._scores_logits():
            columns[row_columns.LOGIT_SCORES] = detection.logit_scores(logits)
        rows = Rows({name: _to(column, device) for name, column in columns.items()})
        kept = None
        if not bool(keep.all()):
            kept = _to(torch.nonzero(keep).reshape(-1), device)
            rows = rows.take(kept)
        buffer = self._buffers.get(dataloader_idx)
        if buffer is None:
            host = frozenset({row_columns.THUMBS})  # made on the device, kept on the host
            buffer = RowBuffer(plan.capacity, self._device_budget, host_columns=host)
            self._buffers[dataloader_idx] = buffer
        buffer.append(rows)
        self._keep_maps(dataloader_idx, rows, kept)

    def _keep_maps(self, dataloader_idx: int, rows: Rows, kept: torch.Tensor | None) -> None:
        """Merge the kept rows' maps into each layer's running top-k, on the device."""
        for layer, pending in self._pending_maps.items():
            if not pending:
                continue
            maps = pending[0] if len(pending) == 1 else torch.cat(pending)  # no copy of one
            maps = _to(maps, rows.positions.device)
            if kept is not None:
                maps = maps.index_select(0, kept)
            state = self._top_maps.get((dataloader_idx, layer))
            if state is None:
                state = spatial_maps.RunningTopMaps.empty(
                    maps.shape[1],
                    min(self.top_k, metadata.MAPPED_IMAGES),
                    tuple(maps.shape[2:]),
                    maps.device,
                )
                self._top_maps[(dataloader_idx, layer)] = state
            state.update(rows.acts[layer], rows.positions, rows.labels >= 0, maps)

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor, where: str) -> None:
        """The checks a recorded batch cannot make without reading values back: the
        labels against the class names, and whether the inputs make thumbnails."""
        if self._known_class_names is not None:
            self._known_class_names.check(y.detach().cpu(), where)
        if self.thumbnails:  # inputs that cannot become images fail here, not later
            to_thumbnails(denormalize_inputs(x[:2], self.denormalize), self.thumbnail_size)

    def _write(self, trainer: pl.Trainer) -> None:
        names = self._names
        strategy = trainer.strategy
        # Every process takes part in the gathering, in the same dataloader order; the
        # collectives get tensors on the root device (NCCL takes CUDA tensors only).
        gathered: dict[int, Rows] = {}
        maps: dict[int, dict[str, spatial_maps.TopMaps]] = {}  # by dataloader and layer

        def gather(local: Rows | None) -> Rows | None:
            return gather_rows(
                local,
                strategy.all_gather,
                strategy.broadcast,
                trainer.world_size,
                device=strategy.root_device,
                chunk_bytes=self.gather_chunk_bytes,
            )

        # What the destination holds, read once (rank zero decides about thumbnails).
        held = (
            self._log_state(self._destination)
            if self.thumbnails and trainer.global_rank == 0
            else None
        )
        for idx in range(len(names)):
            buffer = self._buffers.get(idx)
            local = buffer.rows() if buffer is not None and len(buffer) else None
            local_thumbs = None
            if local is not None and row_columns.THUMBS in local.columns:
                local_thumbs = local.select([row_columns.THUMBS])
                local = local.without(row_columns.THUMBS)
            rows = gather(local)
            # Rank zero decides and every process follows (the same collectives on all):
            # the thumbnails travel, and are written, only when they may be new.
            if self.thumbnails and self._broadcast(
                trainer, self._thumbnails_needed(names[idx], rows, held)
            ):
                thumbs = gather(local_thumbs)
                if rows is not None and thumbs is not None:
                    rows = rows.with_column(row_columns.THUMBS, thumbs.thumbs)
            if rows is not None:
                gathered[idx] = self._labelled_rows(names[idx], rows)
            found = {
                layer: spatial_maps.gather_top_maps(
                    self._top_maps.get((idx, layer)),
                    strategy.all_gather,
                    strategy.broadcast,
                    trainer.world_size,
                    device=strategy.root_device,
                    chunk_bytes=self.gather_chunk_bytes,
                )
                for layer in self.layers
            }
            maps[idx] = {layer: top for layer, top in found.items() if top is not None}
        self._buffers = {}
        self._top_maps = {}
        if trainer.world_size > 1:
            counts = torch.tensor(self._num_classes, device=strategy.root_device)
            num_classes = int(strategy.all_gather(counts).max())
        else:
            num_classes = self._num_classes
        gathered = {idx: rows for idx, rows in gathered.items() if len(rows)}
        if not gathered:
            return
        try:
            if self._write_rank_zero(trainer, names, gathered, num_classes, maps):
                # Only thumbnails that reached the log count as made: a failed or
                # skipped write keeps them due at the next recorded epoch.
                self._fingerprints.update(self._new_fingerprints)
        except MisconfigurationException:
            raise
        except Exception as error:  # the callback's own I/O must not end training
            if self.strict:
                raise
            self._warn_write_failure(trainer, error)
        self._new_fingerprints = {}

    def _labelled_rows(self, name: str, rows: Rows) -> Rows:
        """``rows`` without the images whose label is negative (-100 and other ignore
        values), which are counted in a warning; labels beyond the class names stop
        the run, as the sanity check does."""
        labelled = rows.labels >= 0
        ignored = len(rows) - int(labelled.sum())
        if ignored:
            rank_zero_warn(
                f"DeephysCallback: {ignored} images of {name!r} have a negative label "
                "(e.g. -100, an ignore_index) and were left out of the record and its "
                "scores."
            )
            rows = rows.take(torch.nonzero(labelled).reshape(-1))
        if self._known_class_names is not None:
            self._known_class_names.check(rows.labels, repr(name))
        return rows

    def _thumbnails_needed(self, name: str, rows: Rows | None, held: LogState | None) -> bool:
        """Whether this epoch's thumbnails of ``name`` are to be kept (rank zero's view;
        :meth:`_broadcast` makes it every process's): on its first recorded epoch that
        reached the log in this fit, validate or test call, when its images differ
        from the last written epoch's (by their input fingerprints), when the record
        goes to a run that lacks them (an evaluation's own run), or always with
        ``refresh_thumbnails``. ``held`` is the destination's state (rank zero's only)."""
        fingerprints = None if rows is None else rows.get(row_columns.FINGERPRINTS)
        if fingerprints is not None:
            self._new_fingerprints[name] = fingerprints
        before = self._fingerprints.get(name)
        if self.refresh_thumbnails or before is None or fingerprints is None:
            return True
        if held is not None and (
            name not in held.thumbnails or self._position[0] <= held.last_step
        ):
            return True  # the destination lacks them, or the record goes elsewhere
        return not _same_fingerprints(before, fingerprints)

    @staticmethod
    def _broadcast(trainer: pl.Trainer, decision: bool) -> bool:
        """Rank zero's ``decision``, on every process."""
        if trainer.world_size == 1:
            return decision
        return bool(trainer.strategy.broadcast(decision, 0))

    @rank_zero_only
    def _write_rank_zero(
        self,
        trainer: pl.Trainer,
        names: list[str],
        gathered: dict[int, Rows],
        num_classes: int,
        maps: Mapping[int, Mapping[str, spatial_maps.TopMaps]],
    ) -> bool:
        """Write the epoch's record (rank zero only); True when it reached the log."""
        step, epoch = self._position
        log_dir = self._destination
        state = self._log_state(log_dir)
        holder = state.holder(step)
        if holder == "fit" and self._stage == "fit":  # a resumed fit validating again
            rank_zero_warn(
                f"DeephysCallback: {log_dir} already holds this fit's record at step {step} "
                "(a fit resumed from an earlier checkpoint into the same logger version?); "
                "it is kept and this validation is not recorded again. Log to a new version "
                "(a new TensorBoardLogger) to record it."
            )
            return False
        if step <= state.last_step:
            # Held, or before the run's last step (TensorBoard's Rust loader drops a
            # run's later steps after an earlier one): a run of its own beside it.
            log_dir = writing.evaluation_dir(log_dir, self._stage, step)
            state = self._log_state(log_dir)
            held = f"a {holder} record at step {step}" if holder else f"steps up to {step}"
            rank_zero_info(
                f"DeephysCallback: {self._destination} already holds {held}; this "
                f"{self._stage} record goes to the run {log_dir}"
            )
        order = _ind_first(names, self.ind, self._stage)
        if order[0] not in gathered:
            rank_zero_warn(
                f"DeephysCallback: the in-distribution set {names[order[0]]!r} recorded no "
                f"images at step {step}, so nothing is recorded: every score compares the "
                "other sets with it."
            )
            return False
        for idx in order:
            if idx not in gathered:
                rank_zero_warn(
                    f"DeephysCallback: {names[idx]!r} recorded no images at step {step}; it "
                    "is left out of this record."
                )
        recordings, digests = writing.dataset_recordings(
            {names[idx]: gathered[idx] for idx in order if idx in gathered},
            state.thumbnails,
            self._logits_to_write,
            {names[idx]: found for idx, found in maps.items()},
        )
        class_names = writing.class_names_for(num_classes, recordings, self._known_class_names)
        writing.warn_non_finite(recordings)
        record = Record(
            step=step,
            epoch=epoch,
            layers=tuple(self.layers),
            datasets=tuple(recordings),
            class_names=tuple(class_names),
            num_images={name: len(rec.labels) for name, rec in recordings.items()},
            top_k=self.top_k,
            relu=self.relu,
            stage=self._stage,
            dataset_sizes={name: self._dataset_sizes.get(name) for name in recordings},
        )
        writing.warn_partial(record, self.max_images)
        sink = self._sink_for(trainer) if log_dir == self._destination else None
        write_record(
            sink or self._event_file_sink(log_dir),
            record,
            recordings,
            log_dir=log_dir,
            max_activation_bytes=self.max_activation_bytes,
            detectors=self.ood_detectors,
            scalars=self.log_scalars,
            histograms=self.log_histograms,
        )
        state.add(step, self._stage)
        state.thumbnails.update(digests)
        try:
            state.save()
        except OSError as error:  # the record is complete: only the fast path is lost
            if self.strict:
                raise
            self._warn_once(
                f"state: {_cause(error)}",
                f"DeephysCallback: the record at step {step} is written, but "
                f"{LogState.path(log_dir)} could not be saved ({type(error).__name__}: "
                f"{error}); nothing is lost: the steps are found in the events next time "
                "(unchanged thumbnails may be written again). Make the folder writable.",
            )
        return True

    def _warn_write_failure(self, trainer: pl.Trainer, error: Exception) -> None:
        """Say once per cause that a record could not be written; training goes on."""
        self._warn_once(
            _cause(error),
            f"DeephysCallback: the record at step {self._position[0]} could not be written "
            f"to {self._destination} ({type(error).__name__}: {error}). Training goes on "
            "without it; check that the log directory is writable and has free space, or "
            "pass DeephysCallback(strict=True) to stop on such errors.",
        )

    def _warn_once(self, cause: str, message: str) -> None:
        """``message`` as a warning, the first time ``cause`` is met only."""
        if cause not in self._warned_failures:
            self._warned_failures.add(cause)
            rank_zero_warn(message)

    def _scores_logits(self) -> bool:
        """Whether the buffers keep each image's logit detector scores."""
        return any(d in detection.LOGIT_DETECTORS for d in self.ood_detectors)

    def _keeps_logits(self, num_images: int | None, acts: Mapping[str, torch.Tensor]) -> bool:
        """Whether a dataset's buffer keeps the classifier outputs."""
        if self.record_logits is not None:
            return self.record_logits
        if num_images is None:
            return True  # decided at writing time, by _logits_to_write
        return any(  # the float16 matrix of some layer will be written
            writes_matrix(num_images * a[0].numel() * 2, self.max_activation_bytes)
            for a in acts.values()
        )

    def _logits_to_write(
        self, logits: torch.Tensor | None, acts: Mapping[str, np.ndarray]
    ) -> np.ndarray | None:
        if logits is None:
            return None
        written = any(writes_matrix(a.nbytes, self.max_activation_bytes) for a in acts.values())
        if self.record_logits is None and not written:
            return None  # no full matrix is written: the logits alone export nothing
        return logits.numpy()

    def _log_state(self, log_dir: str) -> LogState:
        state = self._log_states.get(log_dir)
        on_disk = LogState.load(log_dir)
        if log_dir not in self._scanned:  # once per directory and process
            # state.json (and a checkpoint's copy) is a fast path: the steps the events
            # hold count, even with that file lost or damaged (a light scan of the run's
            # own record events).
            on_disk.add_found(event_files.recorded_steps(log_dir))
            for path in assets.remove_stale_temporaries(log_dir):
                rank_zero_info(f"DeephysCallback: removed {path}, left by an interrupted write")
            self._scanned.add(log_dir)
        if state is None:
            state = self._log_states[log_dir] = on_disk
        else:
            state.merge(on_disk)
        return state

    def _position_of(self, trainer: pl.Trainer) -> tuple[int, int]:
        """(step, epoch) of this epoch's record: the trainer's in fit, the loaded
        checkpoint's in validate and test (the trainer's when none was loaded)."""
        if self._stage != "fit":
            position = self._loaded_position
            if position is None and trainer.ckpt_path:
                try:
                    position = _checkpoint_position(_load_checkpoint_header(trainer.ckpt_path))
                except Exception as error:  # any reader error: record at the trainer's step
                    rank_zero_warn(
                        f"DeephysCallback: could not read the step of checkpoint "
                        f"{trainer.ckpt_path!r} ({type(error).__name__}: {error}); this "
                        f"{self._stage} is recorded at the trainer's step "
                        f"{trainer.global_step}."
                    )
            if position is not None:
                return position
        return trainer.global_step, trainer.current_epoch

    def _class_names_given(self, trainer: pl.Trainer) -> GivenClassNames | None:
        """The class names from the callback, else from the datamodule, if any."""
        if self.class_names is not None:
            return GivenClassNames(self.class_names, "DeephysCallback(class_names=...)")
        names = _datamodule_class_names(trainer)
        return None if names is None else GivenClassNames(names, "the datamodule's class names")

    def _sink_for(self, trainer: pl.Trainer) -> SummarySink:
        """The TensorBoardLogger's writer (fetched anew: a finished fit closes it), else ours."""
        logger = _tensorboard_logger(trainer)
        if logger is not None:
            get_file_writer = getattr(logger.experiment, "_get_file_writer", None)
            if get_file_writer is not None:  # torch.utils.tensorboard reopens on demand
                return FileWriterSink(get_file_writer())
        return self._event_file_sink(self._log_dir(trainer))

    def _log_dir(self, trainer: pl.Trainer) -> str:
        """Where records go: the logger's run directory (the TensorBoardLogger's, else
        the first logger's ``log_dir``), else a new ``lightning_logs/version_N`` under
        ``default_root_dir``, claimed once by rank zero (other ranks write nothing)."""
        found = _logger_dir(trainer)
        if found is not None:
            return found
        if self._own_log_dir is None and trainer.global_rank == 0:
            root = storage.join(storage.normalize(trainer.default_root_dir), "lightning_logs")
            self._own_log_dir = writing.new_version_dir(root)
        return self._own_log_dir or ""

    def _event_file_sink(self, log_dir: str) -> EventFileSink:
        if log_dir not in self._own_sinks:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            if not storage.is_url(log_dir):
                os.makedirs(log_dir, exist_ok=True)
            writer = EventFileWriter(log_dir, filename_suffix=".deephys")
            self._own_sinks[log_dir] = EventFileSink(writer)
        return self._own_sinks[log_dir]

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _cause(error: Exception) -> str:
    """What tells one failure from another: its type and, for OS errors, the error
    (not the file: each write's temporary file has a name of its own)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


def _logger_dir(trainer: pl.Trainer) -> str | None:
    """The run directory of the TensorBoardLogger, else of the first logger that has one
    (``CSVLogger.log_dir``); None without such a logger."""
    logger = _tensorboard_logger(trainer)
    if logger is not None:
        return storage.normalize(logger.log_dir)
    for logger in trainer.loggers:
        try:
            log_dir = getattr(logger, "log_dir", None)
        except Exception:  # a logger whose directory is not known yet
            log_dir = None
        if isinstance(log_dir, str | os.PathLike) and os.fspath(log_dir):
            return storage.normalize(log_dir)
    return None


def _find_module(pl_module: torch.nn.Module, name: str, param: str) -> torch.nn.Module:
    modules = dict(pl_module.named_modules())
    compiled = _through_compiled(modules, name)
    if compiled is not None:  # a natural name inside a torch.compile'd submodule
        return compiled
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.3)
    hint = close or names[:10]
    raise MisconfigurationException(
        f"DeephysCallback({param}={name!r}): {type(pl_module).__name__} has no such module. "
        f"Closest module names: {', '.join(hint) or '(the model has no submodules)'}"
    )


def _through_compiled(modules: Mapping[str, torch.nn.Module], name: str) -> torch.nn.Module | None:
    """The module that ``name`` names once each torch.compile'd submodule on its path
    (an ``OptimizedModule``, which holds the original under ``_orig_mod``) is looked
    through, so that layers keep their natural names; None if there is none."""
    from torch._dynamo.eval_frame import OptimizedModule

    parts, path = name.split("."), []
    for part in parts:
        path.append(part)
        if isinstance(modules.get(".".join(path)), OptimizedModule):
            path.append("_orig_mod")
    resolved = ".".join(path)
    if resolved == name or resolved not in modules:
        return None
    return modules[resolved]


def _named_loaders(
    dataloaders: Any, names: Sequence[str] | None = None, stage: str = "fit"
) -> list[tuple[str, Any]]:
    """(name, loader) per dataloader, in dataloader-index order: dict keys, else
    ``names`` (``dataset_names=``), else ``dataset_0..n``."""
    if isinstance(dataloaders, Mapping):
        if names is not None:
            raise MisconfigurationException(
                f"DeephysCallback(dataset_names={list(names)}) names list dataloaders, but the "
                f"{_LOADER_KIND[stage]} dataloaders are a dict: its keys "
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
            f"there are {len(loaders)} {_LOADER_KIND[stage]} dataloaders; give one name each."
        )
    return list(zip(names, loaders, strict=True))


def _check_loader_names(names: list[str], stage: str) -> None:
    """Dataset names must be non-empty and stay distinct in the record and in tags."""
    kind = _LOADER_KIND[stage]
    if "" in names:
        raise MisconfigurationException(
            f"DeephysCallback: a {kind} dataloader is named '' (an empty dict key); give "
            f"it a name. Names: {names}"
        )
    seen: dict[str, str] = {}
    for name in names:
        tag = metadata.scalar_tag("x", dataset=name)  # "/" is escaped in tags
        if tag in seen or name in seen.values():
            other = seen.get(tag, name)
            raise MisconfigurationException(
                f"DeephysCallback: the {kind} dataloaders {other!r} and {name!r} would be "
                "recorded under one name (dict keys become strings; '/' is written as "
                f"'%2F' in tags). Rename one. Names: {names}"
            )
        seen[tag] = name


def _stage(trainer: pl.Trainer) -> str:
    """Which evaluation runs: validation in fit (with its sanity check), validate, test."""
    if trainer.state.fn == TrainerFn.TESTING:
        return "test"
    if trainer.state.fn == TrainerFn.VALIDATING:
        return "validate"
    return "fit"


def _checkpoint_position(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    """(global_step, epoch) a Lightning checkpoint was saved at, if it says."""
    try:
        return int(checkpoint["global_step"]), int(checkpoint["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def _load_checkpoint_header(path: str) -> dict[str, Any]:
    """A checkpoint's contents without reading its tensors into memory (for checkpoints
    whose callbacks were not restored, as weights-only ones)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (OSError, RuntimeError, ValueError):
        from lightning.fabric.utilities.cloud_io import _load

        return _load(path, map_location="cpu")


def _sampling_plan(loader: Any, trainer: pl.Trainer, max_images: int | None) -> SamplingPlan:
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


def _ind_first(names: list[str], ind: str | int | None, stage: str = "fit") -> list[int]:
    """Dataloader indices with the in-distribution one first."""
    kind = _LOADER_KIND[stage]
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


def _datamodule_class_names(trainer: pl.Trainer) -> list[str] | None:
    datamodule = getattr(trainer, "datamodule", None)
    for attribute in ("class_names", "classes"):
        names = getattr(datamodule, attribute, None)
        if isinstance(names, Sequence) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def _same_fingerprints(before: torch.Tensor, now: torch.Tensor) -> bool:
    return torch.equal(before, now)  # the same inputs give the same bits


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without waiting for it: host tensors bound for a GPU go
    through pinned memory, with a non-blocking copy."""
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
