"""The recording of one evaluation epoch on one process: hooks, checks, device rows.

An :class:`EpochRecorder` is started with an ``EpochPlan`` and the modules to hook.
For each captured batch its forward hooks keep the layers' outputs (reduced, float16,
on the layer's device) and the classifier outputs; at the batch's end it checks them
against the batch and appends one row per kept image to that dataloader's
``RowBuffer`` (nothing is read back from the device), and merges the maps of layers
with spatial dims into their running top-k. :meth:`EpochRecorder.finish` gathers
every process's rows and maps through ``Collectives`` into :class:`EpochRows`.

Example::

    recorder = EpochRecorder(CaptureSettings(layers=["fc1"]))
    recorder.start(plan, {"fc1": model.fc1}, model)
    ...  # recorder.batch_start(idx); model(x); recorder.batch_end(batch, idx)
    recorder.stop()
    epoch_rows = recorder.finish(Collectives(None, None, 1), thumbnails_due=lambda n, r: True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn

from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.recording import finiteness, spatial_maps
from deephys_lightning.recording import rows as columns
from deephys_lightning.recording.capture import (
    Denormalize,
    OutputSelector,
    Reduction,
    batch_inputs,
    denormalize_inputs,
    input_fingerprints,
    reduce_activations,
    select_output,
    to_thumbnails,
    top_predictions,
)
from deephys_lightning.recording.gather import Collectives
from deephys_lightning.recording.plan import EpochPlan
from deephys_lightning.recording.rows import DEFAULT_MAX_DEVICE_BYTES, DeviceBudget, RowBuffer, Rows
from deephys_lightning.recording.sampling import SamplingPlan
from tensorboard_plugin_deephys.log.metadata import MAPPED_IMAGES, NO_PREDICTION, TOP_PREDICTIONS

LogitScores = Callable[[torch.Tensor], torch.Tensor]
ThumbnailsDue = Callable[[str, Rows | None], bool]


@dataclasses.dataclass(frozen=True)
class CaptureSettings:
    """What the recorder keeps of each batch (the callback's options of that name)."""

    layers: Sequence[str]
    output_selector: OutputSelector | Mapping[str, OutputSelector] | None = None
    reduction: Reduction = "auto"
    relu: bool = True
    top_k: int = 32
    spatial_maps: bool = True
    thumbnails: bool = True
    thumbnail_size: int = 64
    denormalize: Denormalize | None = None
    input_key: str | int | None = None
    target_key: str | int | None = None
    unpack_batch: Callable[[Any], tuple[Any, Any]] | None = None
    logits_layer: str | None = None  # for messages: where the class scores come from
    logit_scores: LogitScores | None = None  # each image's logit detector scores
    max_device_buffer_bytes: int = DEFAULT_MAX_DEVICE_BYTES

    def selector(self, layer: str) -> OutputSelector | None:
        """The output selector of ``layer``."""
        if isinstance(self.output_selector, Mapping):
            return self.output_selector.get(layer)
        return self.output_selector


@dataclasses.dataclass
class EpochRows:
    """A recorded epoch gathered from every process (complete on rank zero): each
    dataloader's labelled rows on the CPU (dataloaders without rows left out), the
    layers' top maps, and the width of the classifier outputs."""

    rows: dict[int, Rows]
    maps: dict[int, dict[str, spatial_maps.TopMaps]]
    num_classes: int
    # What the detectors on features are fitted with (the callback adds them): the
    # reference set's gathered rows, and the weights of the linear layers that may be
    # the head, copied when the epoch ended.
    reference: Rows | None = None
    heads: dict[str, LinearHead] = dataclasses.field(default_factory=dict)


class EpochRecorder:
    """Records one evaluation epoch on this process (see the module docstring)."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        self.plan: EpochPlan | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._capturing = False  # whether the hooks keep this batch's outputs
        self._loader_idx = 0  # the dataloader of the batch being captured
        self._pending: dict[str, list[torch.Tensor]] = {}
        # per layer, each pending output's per-image status (recording.finiteness)
        self._pending_status: dict[str, list[torch.Tensor]] = {}
        self._pending_maps: dict[str, list[torch.Tensor]] = {}
        self._pending_logits: list[torch.Tensor] = []
        # Each dataloader's thumbnail size, from its first batch on (kept across epochs).
        self._thumb_shapes: dict[int, tuple[int, int]] = {}
        self._clear_epoch()

    def _clear_epoch(self) -> None:
        self._buffers: dict[int, RowBuffer] = {}
        # Per (dataloader, layer) with maps: each neuron's top images so far, on the device.
        self._top_maps: dict[tuple[int, str], spatial_maps.RunningTopMaps] = {}
        self._budget = DeviceBudget(self.settings.max_device_buffer_bytes)  # for all sets
        self._seen: dict[int, int] = {}
        self._checked_loaders: set[int] = set()
        self._num_classes = 0

    # -- the epoch ---------------------------------------------------------------------

    def start(
        self,
        plan: EpochPlan,
        layer_modules: Mapping[str, torch.nn.Module],
        logits_module: torch.nn.Module,
    ) -> None:
        """Begin an epoch of ``plan``: hooks on the layers and the classifier output."""
        self.stop()
        self.plan = plan
        self._clear_epoch()
        for name, module in layer_modules.items():
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))
        self._handles.append(logits_module.register_forward_hook(self._on_logits_output))

    def stop(self) -> None:
        """Remove the hooks (the rows stay until :meth:`finish` or :meth:`discard`)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._capturing = False

    def discard(self) -> None:
        """Drop everything recorded (after an exception)."""
        self.stop()
        self.plan = None
        self._clear_epoch()

    def batch_start(self, dataloader_idx: int) -> None:
        """A batch of ``dataloader_idx`` begins: capture it (in check mode, only each
        dataloader's first batch)."""
        self._new_batch()
        self._loader_idx = dataloader_idx
        hooked = self.plan is not None and bool(self._handles)  # between start and stop
        mode = self.plan.mode if self.plan is not None and hooked else None
        self._capturing = mode == "record" or (
            mode == "check" and dataloader_idx not in self._checked_loaders
        )

    def batch_end(self, batch: Any, dataloader_idx: int) -> None:
        """A batch ended: check what was captured, and keep its rows when recording."""
        if self._capturing:
            assert self.plan is not None
            self._keep_batch(batch, dataloader_idx, check_only=self.plan.mode == "check")
            self._checked_loaders.add(dataloader_idx)
        self._capturing = False
        self._new_batch()

    def finish(self, collectives: Collectives, thumbnails_due: ThumbnailsDue) -> EpochRows:
        """Every process's rows and maps, gathered (call on every process, in step).

        ``thumbnails_due(name, rows)`` is rank zero's decision, given the dataset's
        gathered rows (None elsewhere), whether its thumbnails travel and are kept;
        every process follows it.
        """
        assert self.plan is not None
        plan = self.plan
        gathered: dict[int, Rows] = {}
        maps: dict[int, dict[str, spatial_maps.TopMaps]] = {}
        num_classes = collectives.largest(self._num_classes)  # the widest logits seen
        # The activations stay on the root device for the record's kernels while
        # together they fit in the same budget as the epoch's rows there.
        keep = DeviceBudget(self.settings.max_device_buffer_bytes)
        for idx, name in enumerate(plan.names):
            buffer = self._buffers.get(idx)
            local = buffer.rows() if buffer is not None and len(buffer) else None
            local_thumbs = None
            if local is not None and columns.THUMBS in local.columns:
                local_thumbs = local.select([columns.THUMBS])
                local = local.without(columns.THUMBS)
            rows = collectives.rows(local, keep)
            if self.settings.thumbnails and collectives.decision(thumbnails_due(name, rows)):
                thumbs = collectives.rows(local_thumbs)
                pixels = None if thumbs is None else thumbs.thumbs
                if rows is not None and pixels is not None:
                    rows = rows.with_column(columns.THUMBS, pixels)
            if rows is not None:
                gathered[idx] = self._labelled_rows(name, rows, num_classes)
            found = {
                layer: collectives.top_maps(self._top_maps.get((idx, layer)))
                for layer in self.settings.layers
            }
            maps[idx] = {layer: top for layer, top in found.items() if top is not None}
        self._clear_epoch()
        return EpochRows(
            {idx: rows for idx, rows in gathered.items() if len(rows)}, maps, num_classes
        )

    # -- hooks ---------------------------------------------------------------------------

    def _new_batch(self) -> None:
        self._pending = {name: [] for name in self.settings.layers}
        self._pending_status = {name: [] for name in self.settings.layers}
        self._pending_maps = {name: [] for name in self.settings.layers}
        self._pending_logits = []

    def _layer_hook(self, layer: str) -> Callable:
        settings = self.settings

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self._capturing:
                selected = select_output(output, settings.selector(layer), layer=layer)
                relu = settings.relu
                if self._keeps_maps(selected):  # rectified once, for both
                    selected = selected.detach().float()
                    # A copy of our own: the model may change its output in place later.
                    selected = torch.relu(selected) if relu else selected.clone()
                    relu = False
                    state = self._top_maps.get((self._loader_idx, layer))
                    shape = None if state is None else state.map_shape  # the dataset's
                    self._pending_maps[layer].append(spatial_maps.pooled_maps(selected, shape))
                acts = reduce_activations(
                    selected, relu=relu, reduction=settings.reduction, layer=layer
                )
                # Kept on the layer's device, as float16 (read back once, at the end).
                stored = acts.to(torch.float16)
                self._pending[layer].append(stored)
                self._pending_status[layer].append(finiteness.activation_status(acts, stored))

        return hook

    def _keeps_maps(self, output: Any) -> bool:
        """Whether a layer output's maps are kept (``spatial_maps``)."""
        return (
            self.settings.spatial_maps
            and self.settings.reduction == "auto"
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
            layer = self.settings.logits_layer
            source = "the LightningModule's forward" if layer is None else f"logits_layer {layer!r}"
            raise TypeError(
                f"DeephysCallback takes predictions from {source}, which "
                f"returned a {type(output).__name__}; set logits_layer= to the module that "
                "outputs the class scores (B, num_classes)."
            )
        self._pending_logits.append(output.detach().float())

    # -- one batch -------------------------------------------------------------------------

    def _keep_batch(self, batch: Any, dataloader_idx: int, check_only: bool) -> None:
        """Check one batch's captured outputs, and keep its rows unless ``check_only``."""
        assert self.plan is not None
        settings, plan = self.settings, self.plan
        where = plan.where(dataloader_idx)
        x, y = batch_inputs(batch, settings.input_key, settings.target_key, settings.unpack_batch)
        acts, statuses, logits = self._captured(len(y), where)
        if check_only:
            self._check_batch(x, y, logits.shape[-1], where)
            return
        # The recorded path: nothing below reads a value back from the device. Which
        # rows are kept is known on the host (positions); ignored labels and label
        # ranges are handled at the end of the epoch, on all rows at once.
        device = logits.device
        self._num_classes = max(self._num_classes, logits.shape[-1])
        sampling = plan.sampling.get(dataloader_idx) or SamplingPlan.for_rank(None, 1, 0, None)
        start = self._seen.get(dataloader_idx, 0)
        self._seen[dataloader_idx] = start + len(y)
        positions = sampling.positions(start, len(y))
        keep = sampling.keep(positions)
        if not bool(keep.any()):  # a host tensor
            return
        # Images with values that are not finite are marked, not dropped: the view
        # data leave them out (recording.finiteness); without finite logits, no class.
        bad_inputs = finiteness.input_not_finite(x)
        prediction_status = finiteness.with_input_cause(
            finiteness.prediction_status(logits), bad_inputs
        )
        predicted = prediction_status == finiteness.FINITE
        top_classes, top_probabilities = top_predictions(logits, TOP_PREDICTIONS)
        row = {
            columns.POSITIONS: positions,
            columns.LABELS: y.detach().to(torch.int64),
            columns.PREDS: torch.where(predicted, logits.argmax(dim=-1), NO_PREDICTION),
            # softmax in float32, on the device
            columns.TOP_CLASSES: torch.where(predicted[:, None], top_classes, NO_PREDICTION),
            columns.TOP_PROBABILITIES: torch.where(
                predicted[:, None], top_probabilities, float("nan")
            ),
            columns.LEFT_OUT: prediction_status,
            **{columns.act_column(layer): a for layer, a in acts.items()},
            **{
                columns.left_out_column(layer): finiteness.with_input_cause(status, bad_inputs)
                for layer, status in statuses.items()
            },
        }
        if settings.thumbnails:  # made on the device; kept only when due (finish)
            thumbs = to_thumbnails(
                denormalize_inputs(x, settings.denormalize),
                settings.thumbnail_size,
                self._thumb_shapes.get(dataloader_idx),
            )
            self._thumb_shapes.setdefault(dataloader_idx, (thumbs.shape[1], thumbs.shape[2]))
            row[columns.THUMBS] = thumbs
            row[columns.FINGERPRINTS] = input_fingerprints(x)
        widths = [a.shape[-1] for a in acts.values()]
        if plan.keeps_logits(sampling.recorded_images, widths):
            row[columns.LOGITS] = logits
        if settings.logit_scores is not None:
            row[columns.LOGIT_SCORES] = settings.logit_scores(logits)
        rows = Rows({name: _to(column, device) for name, column in row.items()})
        kept = None
        if not bool(keep.all()):
            kept = _to(torch.nonzero(keep).reshape(-1), device)
            rows = rows.take(kept)
        buffer = self._buffers.get(dataloader_idx)
        if buffer is None:
            host = frozenset({columns.THUMBS})  # made on the device, kept on the host
            buffer = RowBuffer(sampling.capacity, self._budget, host_columns=host)
            self._buffers[dataloader_idx] = buffer
        buffer.append(rows)
        self._keep_maps(dataloader_idx, rows, kept)

    def _captured(
        self, batch_size: int, where: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """The batch's layer outputs, their per-image statuses
        (``recording.finiteness``) and classifier outputs, checked against its size."""
        assert self.plan is not None
        kind = self.plan.kind
        for layer, pending in self._pending.items():
            if not pending:
                raise MisconfigurationException(
                    f"DeephysCallback: layer {layer!r} did not run during {where}. Does "
                    f"{kind}_step call the model through the LightningModule (self(x)) so "
                    f"that {layer!r} runs? A module inside a torch.compile'd submodule never "
                    "reports its output: compile the LightningModule instead."
                )
        if not self._pending_logits:
            raise MisconfigurationException(
                f"DeephysCallback: no class scores were seen during {where}: the "
                f"LightningModule's forward did not run. Call self(x) in {kind}_step (not "
                "self.model(x)), or set logits_layer= to the module that outputs the class "
                "scores."
            )
        acts = {layer: torch.cat(p) for layer, p in self._pending.items()}
        statuses = {layer: torch.cat(p) for layer, p in self._pending_status.items()}
        logits = torch.cat(self._pending_logits).reshape(batch_size, -1)
        for layer, a in acts.items():
            if len(a) != batch_size:
                raise MisconfigurationException(
                    f"DeephysCallback: {where} has {batch_size} labels but layer {layer!r} "
                    f"produced {len(a)} rows; the layer must run once per batch, on the "
                    "batch's images."
                )
        return acts, statuses, logits

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
                    min(self.settings.top_k, MAPPED_IMAGES),
                    (maps.shape[2], maps.shape[3]),
                    maps.device,
                )
                self._top_maps[(dataloader_idx, layer)] = state
            state.update(rows.acts[layer], rows.positions, rows.labels >= 0, maps)

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor, width: int, where: str) -> None:
        """The checks a recorded batch cannot make without reading values back: the
        labels against the class names (without names, against the ``width`` of the
        classifier outputs), and whether the inputs make thumbnails."""
        assert self.plan is not None
        labels = y.detach().cpu()
        if self.plan.class_names is not None:
            self.plan.class_names.check(labels, where)
        elif len(labels) and int(labels.max()) >= width:
            raise MisconfigurationException(_beyond_the_outputs(int(labels.max()), width, where))
        if self.settings.thumbnails:  # inputs that cannot become images fail here, not later
            size = self.settings.thumbnail_size
            to_thumbnails(denormalize_inputs(x[:2], self.settings.denormalize), size)

    def _labelled_rows(self, name: str, rows: Rows, num_classes: int) -> Rows:
        """``rows`` without the images whose label is negative (-100 and other ignore
        values), which are counted in a warning; labels beyond the class names stop
        the run, as the sanity check does. Without class names, labels beyond the
        ``num_classes`` classifier outputs are left out and counted too: a label is
        never turned into an allocation of its size."""
        assert self.plan is not None
        if self.plan.class_names is None and len(rows):
            beyond = rows.labels >= num_classes
            count = int(beyond.sum())
            if count:
                largest = int(rows.labels.max())
                rank_zero_warn(_beyond_the_outputs(largest, num_classes, repr(name), count=count))
                rows = rows.take(torch.nonzero(~beyond).reshape(-1))
        labelled = rows.labels >= 0
        ignored = len(rows) - int(labelled.sum())
        if ignored:
            rank_zero_warn(
                f"DeephysCallback: {ignored} images of {name!r} have a negative label "
                "(e.g. -100, an ignore_index) and were left out of the record and its "
                "scores."
            )
            rows = rows.take(torch.nonzero(labelled).reshape(-1))
        if self.plan.class_names is not None:
            self.plan.class_names.check(rows.labels, repr(name))
        return rows


def _beyond_the_outputs(label: int, width: int, where: str, count: int | None = None) -> str:
    """Labels beyond the classifier's outputs, without class names: what to do
    (``count``: how many images were left out for it)."""
    which = f"label {label}" if count is None else f"{count} images with labels up to {label}"
    left_out = "" if count is None else " They were left out of the record and its scores."
    return (
        f"DeephysCallback: {where} has {which}, but the model outputs {width} class "
        "scores and no class names were given, so the classes are 0 to "
        f"{width - 1}.{left_out} Give DeephysCallback(class_names=...) one name per "
        "class (labels beyond the model's outputs are then recorded), or check the labels."
    )


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without waiting for it: host tensors bound for a GPU go
    through pinned memory, with a non-blocking copy."""
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
