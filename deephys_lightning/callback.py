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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from deephys_lightning import detection, options
from deephys_lightning.recording.capture import Denormalize, OutputSelector, Reduction
from deephys_lightning.recording.gather import DEFAULT_CHUNK_BYTES, Collectives
from deephys_lightning.recording.modules import find_module
from deephys_lightning.recording.plan import (
    LOADER_KIND,
    EpochPlan,
    checkpoint_position,
    epoch_mode,
    matrix_bound,
    trainer_stage,
)
from deephys_lightning.recording.recorder import CaptureSettings, EpochRecorder
from deephys_lightning.recording.reference import FitSources, with_fit_set
from deephys_lightning.recording.rows import DEFAULT_MAX_DEVICE_BYTES
from deephys_lightning.writing.record_writer import RecordWriter, WriteSettings

DEFAULT_MAX_ACTIVATION_BYTES = 32 * 1024 * 1024
STAGES = options.STAGES  # the evaluations that can record


class DeephysCallback(Callback):
    r"""Record the activations of layers on every validation (and test) dataloader for
    Deephys.

    Dataloader 0 (or the one named by ``ind``) is the in-distribution (InD) set; all
    other dataloaders are out-of-distribution (OOD) sets. Datasets are named by the
    keys when the dataloaders are a dict, by ``dataset_names`` for a list, else
    ``dataset_0..n``. Validation during ``fit``, ``trainer.validate`` and
    ``trainer.test`` record (``stages``); outside ``fit`` a record is made at the loaded
    checkpoint's step and epoch.

    The sanity check runs every check of the recording path and writes nothing, so a
    misconfiguration stops the run before the first training batch. During a recorded
    epoch, forward hooks keep one activation per neuron, image and layer (after ReLU,
    averaged over spatial dims or tokens) and the prediction (arg-max of
    ``logits_layer``'s output, by default ``forward``'s: ``validation_step`` must call
    ``self(x)``). At the end of the epoch every process's rows are gathered and rank
    zero's writer thread computes and writes the record into the logger's run
    directory while training goes on; ``fit``, ``validate`` and ``test`` return once
    every record is written (docs/callback.md).

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
        max_images: record at most this many images per dataset (an evenly spread
            subset, the same images every epoch).
        max_activation_bytes: the full float16 activation matrix of a layer and dataset
            is written while it is at most this large; above, only the precomputed view
            data and scores are (they never need it). ``None``: always write it.
        matrices_every_n_records: write a fit's full matrices (and the logits that
            follow them) only at its first recorded epoch, every n-th after it and
            its last epoch (docs/callback.md); validate and test always write them.
        record_logits: also write each image's classifier outputs (float32 ``[N, C]``),
            which :func:`deephys_lightning.export.export_step` needs for the original
            Deephys app. ``None`` (default): while the full activation matrix is written.
            Each image's top 5 classes and their probabilities are written either way.
        thumbnails: store an image per recorded image (needs image inputs).
        thumbnail_size: longest side, in pixels, of the stored thumbnails.
        denormalize: ``(mean, std)`` per channel, or a function, turning inputs into
            displayable images.
        input_key: where the inputs are in a batch: a position for tuple batches
            (default 0), a key for dict batches (default: ``image``/``input``/``x``...).
        target_key: where the labels are (default position 1, or ``label``/``target``/``y``).
        unpack_batch: a function ``batch -> (inputs, labels)``, for any other batch layout.
        record_fast_dev_run: record under ``Trainer(fast_dev_run=...)`` too.
        ood_detectors: the OOD detectors evaluated, InD against each OOD set, at every
            recorded step (``deephys_lightning.detection.DETECTORS``). Default: msp,
            max logit and energy, which cost milliseconds; ``()`` or None: none.
        reference: a dataloader (e.g. a training subset) that the detectors on features
            are fitted on; without it, one half of the InD set (docs/callback.md).
        head: the ``torch.nn.Linear`` that maps the recorded layer to the logits
            (default: found, and checked against the recorded logits).
        log_scalars: also log the headline numbers as scalars (``deephys/...``).
        log_histograms: also log per-neuron novelty and spurious histograms.
        strict: raise when writing a record fails (a full disk, unexpected data)
            instead of warning and training on without that record.
        refresh_thumbnails: keep the thumbnails of every recorded epoch (by default
            only when a set's images are new or changed: docs/callback.md).
        max_device_buffer_bytes: the epoch's rows (all datasets together) are kept on
            the recording device while they take at most this much (default 4 GiB);
            the rest, and thumbnails always, go to pinned host memory
            with non-blocking copies. Rank zero's gathered activations stay on its
            root device within the same bound: the record is computed there.
        gather_chunk_bytes: under several processes, rows are gathered in chunks of
            at most this many bytes per process (default 256 MiB, on the root device).

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
        matrices_every_n_records: int = 1,
        record_logits: bool | None = None,
        thumbnails: bool = True,
        thumbnail_size: int = 64,
        denormalize: Denormalize | None = None,
        input_key: str | int | None = None,
        target_key: str | int | None = None,
        unpack_batch: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        record_fast_dev_run: bool = False,
        ood_detectors: Sequence[str] | None = detection.DEFAULT_DETECTORS,
        reference: Iterable[Any] | None = None,
        head: str | None = None,
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
        self.matrices_every_n_records = options.check_int(
            "matrices_every_n_records", matrices_every_n_records
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
        self.reference = options.check_reference(reference, self.ood_detectors)
        self.head = options.check_optional_name("head", head)
        self.log_scalars = options.check_flag("log_scalars", log_scalars)
        self.log_histograms = options.check_flag("log_histograms", log_histograms)
        self.strict = options.check_flag("strict", strict)
        self.refresh_thumbnails = options.check_flag("refresh_thumbnails", refresh_thumbnails)
        self.max_device_buffer_bytes = options.check_int(
            "max_device_buffer_bytes", max_device_buffer_bytes, minimum=0
        )
        self.gather_chunk_bytes = options.check_int("gather_chunk_bytes", gather_chunk_bytes)

        self._layer_modules: dict[str, torch.nn.Module] = {}
        self._logits_module: torch.nn.Module | None = None
        self._fit_sources: FitSources | None = None  # the reference set, the candidate heads
        self._plan: EpochPlan | None = None  # the evaluation epoch under way
        self._loaded_position: tuple[int, int] | None = None  # (global_step, epoch)
        self._checked = False  # the recording path's checks have passed once
        self._warned_one_loader = False
        self._recorder = EpochRecorder(self._capture_settings())
        self._writer = RecordWriter(self._write_settings())

    def _capture_settings(self) -> CaptureSettings:
        logit_scores = None
        if any(d in detection.LOGIT_DETECTORS for d in self.ood_detectors):
            logit_scores = detection.logit_scores
        return CaptureSettings(
            layers=tuple(self.layers),
            output_selector=self.output_selector,
            reduction=self.reduction,
            relu=self.relu,
            top_k=self.top_k,
            spatial_maps=self.spatial_maps,
            thumbnails=self.thumbnails,
            thumbnail_size=self.thumbnail_size,
            denormalize=self.denormalize,
            input_key=self.input_key,
            target_key=self.target_key,
            unpack_batch=self.unpack_batch,
            logits_layer=self.logits_layer,
            logit_scores=logit_scores,
            max_device_buffer_bytes=self.max_device_buffer_bytes,
        )

    def _write_settings(self) -> WriteSettings:
        return WriteSettings(
            layers=tuple(self.layers),
            top_k=self.top_k,
            relu=self.relu,
            thumbnails=self.thumbnails,
            refresh_thumbnails=self.refresh_thumbnails,
            max_images=self.max_images,
            detectors=self.ood_detectors,
            scalars=self.log_scalars,
            histograms=self.log_histograms,
            strict=self.strict,
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, ind=self.ind)

    # -- set-up ------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._loaded_position = None
        self._checked = False
        self._layer_modules = {name: find_module(pl_module, name, "layer") for name in self.layers}
        self._logits_module = (
            pl_module
            if self.logits_layer is None
            else find_module(pl_module, self.logits_layer, "logits_layer")
        )
        self._fit_sources = FitSources.of(
            pl_module, self, self._layer_modules, self._logits_module, self._capture_settings()
        )
        self._writer.setup(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._recorder.stop()
        self._writer.close()

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._recorder.discard()
        self._plan = None
        self._writer.abandon()

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Where the loaded weights come from: evaluations outside fit record there.
        self._loaded_position = checkpoint_position(checkpoint)

    @override
    def state_dict(self) -> dict[str, Any]:
        return self._writer.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._writer.load_state_dict(state_dict)

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
        self._recorder.batch_start(dataloader_idx)

    @override
    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._recorder.batch_start(dataloader_idx)

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
        self._recorder.batch_end(batch, dataloader_idx)

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
        self._recorder.batch_end(batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer)

    # -- workers -----------------------------------------------------------------------

    def _epoch_start(self, trainer: pl.Trainer, dataloaders: Any) -> None:
        """Plan the epoch, point the writer at its destination, hook the model."""
        stage = trainer_stage(trainer)
        mode = epoch_mode(
            stage,
            self.stages,
            sanity_checking=trainer.sanity_checking,
            fast_dev_run=getattr(trainer, "fast_dev_run", False),
            record_fast_dev_run=self.record_fast_dev_run,
            epoch=trainer.current_epoch,
            every_n_epochs=self.every_n_epochs,
            checked=self._checked,
        )
        self._plan = None
        if mode is None:
            return
        plan = EpochPlan.make(
            trainer,
            dataloaders,
            mode=mode,
            dataset_names=self.dataset_names,
            ind=self.ind,
            class_names=self.class_names,
            max_images=self.max_images,
            loaded_position=self._loaded_position,
            max_activation_bytes=matrix_bound(
                self.max_activation_bytes,
                stage,
                epoch=trainer.current_epoch,
                max_epochs=trainer.max_epochs,
                every_n_epochs=self.every_n_epochs,
                every_n_records=self.matrices_every_n_records,
            ),
            record_logits=self.record_logits,
        )
        if len(plan.names) == 1 and not self._warned_one_loader:
            self._warned_one_loader = True
            rank_zero_warn(
                f"DeephysCallback: one {LOADER_KIND[plan.stage]} dataloader "
                f"({plan.names[0]!r}), so there is no OOD set to compare it with: no "
                "novelty, spurious or detection scores. Pass a dict of dataloaders, "
                "e.g. {'mnist': ind_loader, 'rotated': ood_loader}."
            )
        self._plan = plan
        self._writer.begin(trainer, plan)
        assert self._logits_module is not None
        self._recorder.start(plan, self._layer_modules, self._logits_module)

    def _epoch_end(self, trainer: pl.Trainer) -> None:
        """Unhook; when recording, gather every process's rows and hand the record to
        the writer thread (training goes on while it is written)."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        self._recorder.stop()
        self._checked = True
        if plan.mode != "record":
            self._recorder.discard()
            return
        collectives = Collectives.of(trainer.strategy, trainer.world_size, self.gather_chunk_bytes)
        self._writer.prepare(trainer, plan, collectives)  # the previous record, collected
        epoch = self._recorder.finish(
            collectives, lambda name, rows: self._writer.thumbnails_due(plan, name, rows)
        )
        if self._fit_sources is not None:  # the reference rows, the head weights
            epoch = with_fit_set(epoch, trainer, collectives, self._fit_sources)
        self._writer.write(trainer, plan, epoch)
