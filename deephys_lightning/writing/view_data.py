"""Everything a record holds, computed from the gathered rows: pure, nothing written.

:func:`recordings_from_rows` turns each dataset's gathered rows into a
:class:`DatasetRecording` (arrays on the host); :func:`record_view` computes, from the
recordings, every array, score, scalar and detection of one record as a
:class:`RecordView`, which ``writing.events.write_view`` then writes. Computing never
writes, and writing never computes (except encoding thumbnails and protobufs).

Example::

    recordings = {"mnist": DatasetRecording(labels, preds, {"fc1": acts})}
    view = record_view(record, recordings, max_activation_bytes=None, detectors=())
    view.layers[("fc1", "mnist")][Kind.TOP_INDICES]   # int32 [M, k]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import numpy as np
import torch

from deephys_lightning import calibration, contributions, detection, metrics
from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.recording import capture, finiteness, spatial_maps
from deephys_lightning.recording.head import head_mismatch
from deephys_lightning.recording.plan import writes_matrix
from deephys_lightning.recording.rows import Rows
from deephys_lightning.writing.summaries import RecordCancelled
from tensorboard_plugin_deephys.log import derived, metadata
from tensorboard_plugin_deephys.log.assets import Thumbnails
from tensorboard_plugin_deephys.log.metadata import (
    CALIBRATION_METRICS,
    NO_PREDICTION,
    TOP_PREDICTIONS,
    Calibration,
    Detection,
    Kind,
    LeftOut,
    Record,
)


@dataclasses.dataclass
class DatasetRecording:
    """What one dataset contributes to a record.

    Args:
        labels: int [N] ground-truth classes.
        predictions: int [N] predicted classes.
        activations: layer name -> float [N, M] activations (after ReLU and reduction);
            a torch tensor on a device (a GPU) is computed on there, and only the
            results, which are small, cross to the host.
        thumbnails: uint8 [N, H, W, 3] (or ``assets.Thumbnails``, with their checksums
            and digest computed already), or None when written already for this dataset.
        positions: int [N] index in the dataset of each image (default 0..N-1).
        logits: float [N, C] classifier outputs, or None when not recorded.
        logit_scores: float32 [N, 3] the ``msp``, ``max_logit`` and ``energy`` score of
            each image (``detection.logit_scores``); computed from ``logits`` when None.
        top_classes: int [N, k] each image's most probable classes, most probable first
            (``capture.top_predictions``, k = ``min(metadata.TOP_PREDICTIONS, C)``),
            with ``top_probabilities``, float [N, k], their softmax probabilities;
            computed from ``logits`` when None (and not written without either).
        top_maps: layer name -> the maps of its top images (``spatial_maps.TopMaps``),
            for the layers that have them; written as ``top_maps``.
        left_out: uint8 [N] whether each image's classifier outputs are finite, else
            why not (``recording.finiteness``; an image without has no prediction);
            found from ``logits`` when None (and all finite without them).
        layer_left_out: layer name -> uint8 [N] the same for the layer's activations;
            found from the activations for a layer not in it.
    """

    labels: np.ndarray
    predictions: np.ndarray
    activations: dict[str, np.ndarray | torch.Tensor]
    thumbnails: np.ndarray | Thumbnails | None = None
    positions: np.ndarray | None = None
    logits: np.ndarray | None = None
    logit_scores: np.ndarray | None = None
    top_classes: np.ndarray | None = None
    top_probabilities: np.ndarray | None = None
    top_maps: dict[str, spatial_maps.TopMaps] = dataclasses.field(default_factory=dict)
    left_out: np.ndarray | None = None
    layer_left_out: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def prediction_status(self) -> np.ndarray:
        """uint8 ``[N]``: :attr:`left_out`, else found from the logits (all finite
        without them)."""
        if self.left_out is not None:
            return np.asarray(self.left_out, dtype=np.uint8)
        if self.logits is None:
            return np.zeros(len(self.labels), dtype=np.uint8)
        return finiteness.prediction_status(torch.from_numpy(np.asarray(self.logits))).numpy()

    def layer_status(self, layer: str) -> np.ndarray:
        """uint8 ``[N]``: the layer's statuses, recorded or found from its activations."""
        found = self.layer_left_out.get(layer)
        if found is not None:
            return np.asarray(found, dtype=np.uint8)
        acts = self.activations[layer]
        if not isinstance(acts, torch.Tensor):
            acts = torch.from_numpy(np.ascontiguousarray(acts))
        return finiteness.status_of_values(acts, stored_as_float16=acts.dtype != torch.float16)

    def top_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """int32 ``[N, k]`` top classes and float32 ``[N, k]`` their probabilities, or
        None without them and without logits."""
        classes, probabilities = self.top_classes, self.top_probabilities
        if classes is None and probabilities is None:
            if self.logits is None:
                return None
            logits = torch.from_numpy(np.asarray(self.logits))
            top = capture.top_predictions(logits, TOP_PREDICTIONS)
            classes, probabilities = top[0].numpy(), top[1].numpy()
        if classes is None or probabilities is None:
            raise ValueError("top_classes and top_probabilities go together; got only one")
        classes = np.asarray(classes, dtype=np.int32)
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if classes.ndim != 2 or classes.shape != probabilities.shape:
            raise ValueError(
                f"top_classes {list(classes.shape)} and top_probabilities "
                f"{list(probabilities.shape)} must both be [N, k]"
            )
        return classes, probabilities

    def detector_scores(self) -> np.ndarray | None:
        """The logit detectors' scores ``[N, 3]``, or None without logits."""
        if self.logit_scores is not None:
            return np.asarray(self.logit_scores, dtype=np.float32)
        if self.logits is None:
            return None
        return detection.logit_scores(torch.from_numpy(np.asarray(self.logits))).numpy()


@dataclasses.dataclass
class RecordView:
    """One record, computed and ready to write (``writing.events.write_view``).

    ``datasets``: each dataset's per-image arrays by kind (labels, predictions,
    positions, logits, top predictions); ``accuracy`` each dataset's (of one with
    images); ``thumbnails`` those to write; ``layers``: by (layer, dataset), the view
    data by kind (:func:`layer_arrays`, with the InD set's ``histogram_range`` and the
    ``top_maps`` where kept); ``scores``: by (layer, OOD set); ``detections``: by OOD
    set (empty without detectors); ``calibration``: by dataset, how well the
    classifier's confidence serves (with logit scores only); ``notes``: what could not
    be written, in words (a warning each). The images left out for values that are not
    finite are counted in ``record.left_out``.
    """

    record: Record
    datasets: dict[str, dict[Kind, np.ndarray]]
    accuracy: dict[str, float]
    thumbnails: dict[str, Thumbnails]
    layers: dict[tuple[str, str], dict[Kind, np.ndarray]]
    scores: dict[tuple[str, str], derived.OODScores]
    detections: dict[str, list[Detection]]
    notes: list[str]
    calibration: dict[str, Calibration] = dataclasses.field(default_factory=dict)


LogitsRule = Callable[[int, list[int]], bool]


def recordings_from_rows(
    rows_by_name: Mapping[str, Rows],
    top_maps: Mapping[str, Mapping[str, spatial_maps.TopMaps]],
    keeps_logits: LogitsRule,
    thumbnails: Mapping[str, Thumbnails | None],
) -> dict[str, DatasetRecording]:
    """Each dataset's recording from its gathered rows, in the order given: on the
    host, but for activations that are on a device (rank zero's root device under
    CUDA), which stay there for the record's kernels (:func:`record_view`).

    ``keeps_logits(num_images, layer_widths)`` is the plan's rule for the classifier
    outputs (``EpochPlan.keeps_logits``); ``thumbnails`` those to write, by dataset.
    """
    recordings: dict[str, DatasetRecording] = {}
    for name, rows in rows_by_name.items():
        # Activations stay tensors, on a device where they are: the kernels compute there.
        acts: dict[str, np.ndarray | torch.Tensor] = dict(rows.acts)
        widths = [a.shape[-1] for a in acts.values()]
        logits = rows.logits
        if logits is not None and not keeps_logits(len(rows), widths):
            logits = None
        recordings[name] = DatasetRecording(
            labels=rows.labels.numpy(),
            predictions=rows.preds.numpy(),
            activations=acts,
            logits=_numpy(logits),
            logit_scores=_numpy(rows.logit_scores),
            top_classes=_numpy(rows.top_classes),
            top_probabilities=_numpy(rows.top_probabilities),
            thumbnails=thumbnails.get(name),
            positions=rows.positions.numpy(),
            top_maps=dict(top_maps.get(name, {})),
            left_out=_numpy(rows.left_out),
            layer_left_out={layer: s.numpy() for layer, s in rows.layer_left_out.items()},
        )
    return recordings


def class_names_for(num_classes: int, recordings: Mapping[str, DatasetRecording]) -> list[str]:
    """``"0"``, ``"1"``, ... up to the number of logits or the largest label: the
    class names of a record whose names were not given."""
    max_label = max((int(r.labels.max()) for r in recordings.values() if len(r.labels)), default=-1)
    return [str(i) for i in range(max(num_classes, max_label + 1))]


def record_view(
    record: Record,
    recordings: Mapping[str, DatasetRecording],
    *,
    max_activation_bytes: int | None = None,
    detectors: tuple[str, ...] = (),
    cancelled: Callable[[], bool] | None = None,
    reference: DatasetRecording | None = None,
    heads: Mapping[str, LinearHead] | None = None,
) -> RecordView:
    """Everything ``record`` holds, computed from ``recordings`` (pure).

    For each dataset: labels, predictions, positions, its accuracy, each image's top
    classes and their probabilities (when given, or computed from the logits), the
    classifier outputs (when given) and thumbnails (when given). For each layer and
    dataset: the view data of :func:`layer_arrays` (the float16 activation matrix only
    while ``writes_matrix`` says so), and the maps of its top images where the
    recording has them. For each layer and OOD set: per-neuron novelty, spurious score
    and activation ratio. For each OOD set: the metrics of the OOD ``detectors``
    (``detection.DETECTORS``; the logit ones need every dataset's logits or logit
    scores). ``cancelled()`` true stops the computing between layers
    (``RecordCancelled``).
    """
    missing = [name for name in record.datasets if name not in recordings]
    if missing:
        raise ValueError(f"no recording for datasets {missing}")
    detections: dict[str, list[Detection]] = {ood: [] for ood in record.ood} if detectors else {}
    view = RecordView(record, {}, {}, {}, {}, {}, detections, [])
    left_out: list[LeftOut] = []
    for name in record.datasets:
        rec = recordings[name]
        view.datasets[name] = dataset_arrays(rec)
        left_out += finiteness.left_out(name, None, rec.prediction_status())
        arrays = view.datasets[name]
        labels, predictions = arrays[Kind.LABELS], arrays[Kind.PREDICTIONS]
        if np.any(predictions != NO_PREDICTION):
            view.accuracy[name] = derived.accuracy(labels, predictions)
        if rec.thumbnails is not None:
            view.thumbnails[name] = Thumbnails.of(rec.thumbnails)
    if any(d in detection.LOGIT_DETECTORS for d in detectors):
        found_scores = {name: recordings[name].detector_scores() for name in record.datasets}
        logit_scores = {name: s for name, s in found_scores.items() if s is not None}
        without = [name for name in record.datasets if name not in logit_scores]
        if without:
            raise ValueError(
                f"the logit detectors in {list(detectors)} need logits or logit_scores for "
                f"every dataset; {without} have neither"
            )
        found = detection.logit_detections(logit_scores, ind=record.ind, detectors=detectors)
        for ood, rows in found.items():
            view.detections[ood] += rows
        for name, scores in logit_scores.items():
            arrays = view.datasets[name]
            view.calibration[name] = dataset_calibration(
                scores, arrays[Kind.PREDICTIONS], arrays[Kind.LABELS]
            )
    for layer in record.layers:
        if cancelled is not None and cancelled():
            raise RecordCancelled(f"the record at step {record.step} was stopped before its end")
        head, no_head = None, ""
        if heads:
            head, no_head = _head_of(layer, recordings[record.ind], reference, heads)
        finite = {name: _FiniteRows.finite(recordings[name], layer) for name in record.datasets}
        left_out += _layer_view(view, layer, recordings, finite, max_activation_bytes, head)
        if any(d in detection.FITTED_DETECTORS for d in detectors):
            _fitted_detections(view, layer, finite, reference, (head, no_head), detectors)
    view.record = dataclasses.replace(record, left_out=tuple(left_out))
    return view


def dataset_calibration(
    logit_scores: np.ndarray, predictions: np.ndarray, labels: np.ndarray
) -> Calibration:
    """A dataset's :class:`Calibration` from its logit scores (the ``msp`` column, the
    log-odds of the confidence), predictions and labels; images without a prediction
    have no confidence either (NaN scores) and are counted as ``unscored``."""
    found = calibration.calibration_metrics(logit_scores[:, 0], predictions, labels)
    return Calibration(
        images=int(found["images"]),
        unscored=int(found["unscored"]),
        **{name: float(found[name]) for name in CALIBRATION_METRICS},
    )


def dataset_arrays(rec: DatasetRecording) -> dict[Kind, np.ndarray]:
    """A dataset's per-image arrays by kind, in the stored dtypes."""
    labels = np.asarray(rec.labels, dtype=np.int32)
    positions = np.arange(len(labels)) if rec.positions is None else rec.positions
    # No class for an image whose classifier outputs are not finite (an arg-max of NaN
    # would say class 0).
    predicted = rec.prediction_status() == finiteness.FINITE
    arrays = {
        Kind.LABELS: labels,
        Kind.PREDICTIONS: predictions_of(rec),
        Kind.POSITIONS: np.asarray(positions, dtype=np.int32),
    }
    if rec.logits is not None:
        arrays[Kind.LOGITS] = np.asarray(rec.logits, dtype=np.float32)
    top = rec.top_predictions()
    if top is not None:
        classes, probabilities = top
        keep = predicted[:, None]
        arrays[Kind.TOP_CLASSES] = np.where(keep, classes, NO_PREDICTION).astype(np.int32)
        arrays[Kind.TOP_PROBABILITIES] = np.where(keep, probabilities, np.nan).astype(np.float32)
    return arrays


def _layer_view(
    view: RecordView,
    layer: str,
    recordings: Mapping[str, DatasetRecording],
    finite: Mapping[str, _FiniteRows],
    max_activation_bytes: int | None,
    head: LinearHead | None,
) -> list[LeftOut]:
    """One layer's part of ``view``: view data, maps, scores and, where the layer feeds
    the linear ``head``, what each neuron did to each prediction
    (:func:`contribution_arrays`); returns the images it left out for activations that
    are not finite.

    Such images take no part in the layer's maxima, means, scores, distributions, top
    images, confusion sets or detectors: each dataset's arrays are computed on its
    finite rows (:class:`_FiniteRows`), and their image indices point into the whole
    set. The activation matrix, where written, keeps every row as recorded.
    """
    record = view.record
    num_classes = len(record.class_names)
    left_out: list[LeftOut] = []
    for name in record.datasets:
        left_out += finiteness.left_out(name, layer, recordings[name].layer_status(layer))
    # One source of truth: everything is computed on the stored float16 values, on the
    # device that holds them.
    acts = {name: rows.kernel_acts for name, rows in finite.items()}
    statistics = {
        name: metrics.dataset_statistics(acts[name], finite[name].labels, num_classes)
        for name in record.datasets
    }
    ind_means, ind_max, _ = statistics[record.ind]
    # One histogram range per neuron for every dataset, written with the InD set's.
    value_range = metrics.histogram_range(
        [acts[name] for name in record.datasets], [statistics[name] for name in record.datasets]
    )
    for name in record.datasets:
        rec, rows = recordings[name], finite[name]
        all_rows = len(rec.labels)
        arrays = layer_arrays(
            acts[name],
            rows.recording,
            statistics[name],
            ind_max,
            num_classes=num_classes,
            top_k=record.top_k,
            full=False,
            value_range=value_range,
        )
        if head is not None:
            arrays.update(
                contribution_arrays(rows.kernel_acts, rows.recording, arrays[Kind.PAIRS], head)
            )
        arrays = rows.in_whole_set(arrays)
        if writes_matrix(all_rows, acts[name].shape[1], max_activation_bytes):
            arrays = {Kind.ACTIVATIONS: rows.stored, **arrays}
        if name == record.ind:
            arrays[Kind.HISTOGRAM_RANGE] = value_range
            if head is not None:
                arrays[Kind.HEAD_WEIGHT], arrays[Kind.HEAD_BIAS] = head.weight, head.bias
        maps = _top_maps(view, layer, name, rec, arrays[Kind.TOP_INDICES])
        if maps is not None:
            arrays[Kind.TOP_MAPS] = maps
        view.layers[(layer, name)] = arrays
    for ood in record.ood:
        ood_means, ood_max, _ = statistics[ood]
        view.scores[(layer, ood)] = metrics.ood_scores(ind_means, ind_max, ood_means, ood_max)
    return left_out


def _fitted_detections(
    view: RecordView,
    layer: str,
    finite: Mapping[str, _FiniteRows],
    reference: DatasetRecording | None,
    head_found: tuple[LinearHead | None, str],
    detectors: tuple[str, ...],
) -> None:
    """The rows of the detectors fitted on ``layer``'s features (``detection.FitSet``):
    fitted on the ``reference`` set's finite rows, every InD image scored; without a
    reference, fitted on one half of the InD set's finite rows, the other half scored.
    The head detectors use the layer's head (:func:`_head_of`), or say why there is
    none. They compute on the device that holds the fit set's rows."""
    record = view.record
    scored = {name: rows.kernel_acts for name, rows in finite.items()}
    ind = finite[record.ind]
    if reference is not None and layer in reference.activations:
        kept = _FiniteRows.finite(reference, layer)
        fit = detection.FitSet(kept.kernel_acts, kept.labels, "reference")
    else:
        # (views of the rows: the halves take no memory of their own)
        fit_acts, scored[record.ind] = detection.halves(ind.kernel_acts)
        fit = detection.FitSet(fit_acts, detection.halves(ind.labels)[0], "ind_half")
    head, no_head = head_found
    if head is None and not no_head:
        no_head = (
            f"the model has no torch.nn.Linear as wide as its logits for layer {layer!r} "
            "to feed; name it with DeephysCallback(head=...)"
        )
    found = detection.feature_detections(
        layer,
        scored,
        ind=record.ind,
        fit=fit,
        num_classes=len(record.class_names),
        detectors=detectors,
        head=head,
        no_head=no_head,
    )
    for ood, rows in found.items():
        view.detections[ood] += rows


def contribution_arrays(
    acts: np.ndarray | torch.Tensor,
    recording: DatasetRecording,
    pairs: np.ndarray,
    head: LinearHead,
) -> dict[Kind, np.ndarray]:
    """What each neuron did to the predictions of ``acts``' images through the linear
    ``head`` (``deephys_lightning.contributions``): per image, the top contributions
    to its predicted and true class's logits and its margin; per directed confusion
    pair of ``pairs``, the top mean contributions to the margin; per neuron, what
    zeroing it alone does to the predictions (on at most
    ``contributions.ZEROING_MAX_IMAGES`` images, evenly spread)."""
    labels, predictions = np.asarray(recording.labels), np.asarray(recording.predictions)
    found = contributions.image_contributions(
        acts, labels, predictions, head, n=metadata.TOP_NEURONS
    )
    pair_neurons, pair_values = contributions.pair_contributions(
        acts, labels, predictions, pairs, head, n=metadata.TOP_NEURONS
    )
    zeroed = contributions.zeroing_effect(
        acts, labels, head, max_images=contributions.ZEROING_MAX_IMAGES
    )
    return {
        Kind.ZEROED_CHANGES: zeroed.changed,
        Kind.ZEROED_ACCURACY: zeroed.accuracy,
        Kind.ZEROING_BASE: np.array([zeroed.base_accuracy, zeroed.images], dtype=np.float32),
        Kind.PREDICTED_PUSH_NEURONS: found.predicted_neurons,
        Kind.PREDICTED_PUSH_VALUES: found.predicted_values,
        Kind.LABEL_PUSH_NEURONS: found.label_neurons,
        Kind.LABEL_PUSH_VALUES: found.label_values,
        Kind.MARGINS: found.margins,
        Kind.PAIR_PUSH_NEURONS: pair_neurons,
        Kind.PAIR_PUSH_VALUES: pair_values,
    }


def _head_of(
    layer: str,
    ind: DatasetRecording,
    reference: DatasetRecording | None,
    heads: Mapping[str, LinearHead],
) -> tuple[LinearHead | None, str]:
    """The linear head ``layer`` feeds, checked on the reference set's rows (with their
    logits) or else on the InD set's (logits, or without them the ``max_logit``
    scores); None with the reason in words when none of ``heads`` fits."""
    if reference is not None and reference.logits is not None and layer in reference.activations:
        rows = _FiniteRows.finite(reference, layer)
        kept = slice(None) if rows.kept is None else rows.kept
        return _layer_head(layer, heads, rows.kernel_acts, np.asarray(reference.logits)[kept], None)
    rows = _FiniteRows.finite(ind, layer)
    kept = slice(None) if rows.kept is None else rows.kept
    logits = None if ind.logits is None else np.asarray(ind.logits)[kept]
    scores = ind.detector_scores()
    max_logits = None if scores is None else scores[kept, 1]
    return _layer_head(layer, heads, rows.kernel_acts, logits, max_logits)


def _layer_head(
    layer: str,
    heads: Mapping[str, LinearHead],
    features: np.ndarray | torch.Tensor,
    logits: np.ndarray | None,
    max_logits: np.ndarray | None,
) -> tuple[LinearHead | None, str]:
    """The first of ``heads`` that maps ``features`` to ``logits`` (or to their maxima,
    ``max_logits``), and None with the reason in words when none does."""
    target = logits if logits is not None else max_logits
    if not heads:
        return None, (
            f"the model has no torch.nn.Linear as wide as its logits for layer {layer!r} "
            "to feed; name it with DeephysCallback(head=...)"
        )
    if target is None:
        return None, "no classifier outputs were recorded to check the head against"
    reasons = []
    for name, head in heads.items():
        mismatch = head_mismatch(features, target, head)
        if mismatch is None:
            return head, ""
        reasons.append(f"{name!r}: {mismatch}")
    return None, f"layer {layer!r} feeds no linear head as recorded (" + "; ".join(reasons) + ")"


class _FiniteRows:
    """A dataset's rows whose activations on one layer are finite: ``kernel_acts``
    (float16, as stored, where the recording holds them: on its device for a tensor
    on one), ``labels``, a ``recording`` of those rows' labels and predictions, and
    ``kept`` (their indices in the whole set; None: all of them). ``stored`` (the
    whole float16 matrix) is a host copy, made only when the full matrix is written."""

    def __init__(
        self, whole: np.ndarray | torch.Tensor, rec: DatasetRecording, kept: np.ndarray | None
    ) -> None:
        self._whole = whole
        self.kept = kept
        labels = np.asarray(rec.labels)
        # Confusion sets pair labels with predictions: none for an image without one.
        predictions = np.asarray(predictions_of(rec))
        if kept is None:
            self.kernel_acts = whole
        else:
            labels, predictions = labels[kept], predictions[kept]
            self.kernel_acts = metrics.rows_at(whole, kept)
        self.labels = labels
        self.recording = DatasetRecording(labels, predictions, {})

    @classmethod
    def finite(cls, rec: DatasetRecording, layer: str) -> _FiniteRows:
        """The rows of ``rec`` whose activations on ``layer`` are all finite."""
        return cls.of(rec, layer, rec.layer_status(layer) == finiteness.FINITE)

    @classmethod
    def of(cls, rec: DatasetRecording, layer: str, finite: np.ndarray) -> _FiniteRows:
        found = rec.activations[layer]
        if isinstance(found, torch.Tensor):
            whole: np.ndarray | torch.Tensor = metrics.as_float16(found)
        else:
            with np.errstate(over="ignore"):  # overflow is counted (the status), not warned
                whole = np.asarray(found, dtype=np.float16)
        return cls(whole, rec, None if bool(finite.all()) else np.flatnonzero(finite))

    @functools.cached_property
    def stored(self) -> np.ndarray:
        """The whole float16 matrix, on the host."""
        return metrics.as_numpy(self._whole)

    def in_whole_set(self, arrays: dict[Kind, np.ndarray]) -> dict[Kind, np.ndarray]:
        """``arrays`` computed on the finite rows, with image indices into the whole
        set and per-image rows for every image (none for those left out)."""
        if self.kept is None:
            return arrays
        kept, count = self.kept, len(self._whole)
        for kind in (Kind.TOP_INDICES, Kind.BOTTOM_INDICES, Kind.INTERVAL_INDICES):
            found = arrays[kind]
            whole = np.full(found.shape, -1, dtype=np.int32)
            whole[found >= 0] = kept[found[found >= 0]]
            arrays[kind] = whole
        per_image = (
            (Kind.IMAGE_TOP_NEURONS, -1),
            (Kind.IMAGE_TOP_VALUES, np.nan),
            (Kind.PREDICTED_PUSH_NEURONS, -1),
            (Kind.PREDICTED_PUSH_VALUES, np.nan),
            (Kind.LABEL_PUSH_NEURONS, -1),
            (Kind.LABEL_PUSH_VALUES, np.nan),
            (Kind.MARGINS, np.nan),
        )
        for kind, empty in per_image:
            if kind not in arrays:
                continue
            found = arrays[kind]
            whole = np.full((count, *found.shape[1:]), empty, dtype=found.dtype)
            whole[kept] = found
            arrays[kind] = whole
        return arrays


def predictions_of(rec: DatasetRecording) -> np.ndarray:
    """int32 ``[N]`` a recording's predictions, :data:`NO_PREDICTION` where its classifier
    outputs are not finite."""
    predicted = rec.prediction_status() == finiteness.FINITE
    return np.where(predicted, rec.predictions, NO_PREDICTION).astype(np.int32)


def _top_maps(
    view: RecordView, layer: str, name: str, rec: DatasetRecording, top_indices: np.ndarray
) -> np.ndarray | None:
    """The maps of a layer's top images on one dataset, where they were kept. Maps that
    belong to other images than ``top_indices`` are left out, with a note that says so."""
    found = rec.top_maps.get(layer)
    if found is None:
        return None
    positions = np.arange(len(rec.labels)) if rec.positions is None else rec.positions
    try:
        return spatial_maps.top_image_maps(found, positions, top_indices, layer=layer, dataset=name)
    except ValueError as error:
        view.notes.append(str(error))
        return None


def layer_arrays(
    acts: np.ndarray | torch.Tensor,
    recording: DatasetRecording,
    statistics: metrics.DatasetStatistics,
    ind_max: np.ndarray,
    *,
    num_classes: int,
    top_k: int,
    full: bool,
    value_range: np.ndarray | None = None,
) -> dict[Kind, np.ndarray]:
    """The view data of one layer on one dataset, by kind, in the stored dtypes.

    ``statistics`` are the dataset's category means and per-neuron maxima and minima
    (``metrics.dataset_statistics``), ``ind_max`` the InD maxima that normalize it.
    ``full`` adds the activation matrix itself. ``value_range`` (float32 ``[M, 2]``,
    ``metrics.histogram_range`` of every dataset of the record; None: of this one)
    is the range of the activation histograms, written once per layer by the caller.
    """
    means, maxima, _ = statistics
    arrays: dict[Kind, np.ndarray] = {}
    if full:
        arrays[Kind.ACTIVATIONS] = metrics.as_numpy(acts)
    if value_range is None:
        value_range = metrics.histogram_range([acts], [statistics])
    found = metrics.neuron_distributions(
        acts,
        value_range,
        maxima,
        k=top_k,
        bins=metadata.HISTOGRAM_BINS,
        bands=metadata.INTERVAL_BANDS,
        per_band=metadata.INTERVAL_IMAGES,
    )
    # The top images come from the same sort (the arrays of metrics.top_k).
    arrays[Kind.TOP_INDICES] = found.top_indices
    arrays[Kind.TOP_VALUES] = found.top_values
    arrays[Kind.BOTTOM_INDICES] = found.bottom_indices
    arrays[Kind.BOTTOM_VALUES] = found.bottom_values
    arrays[Kind.ACTIVATION_COUNTS] = found.counts
    arrays[Kind.FIRE_FRACTION] = found.fire_fraction
    arrays[Kind.INTERVAL_INDICES] = found.interval_indices
    arrays[Kind.INTERVAL_VALUES] = found.interval_values
    neurons, normalized = metrics.top_neurons(acts, ind_max, metadata.TOP_NEURONS)
    arrays[Kind.IMAGE_TOP_NEURONS] = neurons.astype(np.int32)
    arrays[Kind.IMAGE_TOP_VALUES] = normalized.astype(np.float32)
    arrays[Kind.CATEGORY_MEANS] = means.astype(np.float32)
    arrays[Kind.MAXIMA] = maxima.astype(np.float32)
    labels, predictions = np.asarray(recording.labels), np.asarray(recording.predictions)
    predicted = predictions != NO_PREDICTION  # the images with a class predicted
    if not bool(predicted.all()):
        acts = metrics.rows_at(acts, np.flatnonzero(predicted))
        labels, predictions = labels[predicted], predictions[predicted]
        neurons, normalized = neurons[predicted], normalized[predicted]
    # A confusion set of one image has its image's top neurons (computed just above).
    directed, either = metrics.confusion_sets_top_neurons(
        acts,
        labels,
        predictions,
        num_classes,
        metadata.TOP_NEURONS,
        ind_max,
        image_top=(neurons, normalized),
    )
    for kinds, (pairs, pair_neurons, pair_means) in (
        ((Kind.PAIRS, Kind.PAIR_TOP_NEURONS, Kind.PAIR_TOP_MEANS), directed),
        ((Kind.CONFUSIONS, Kind.CONFUSION_TOP_NEURONS, Kind.CONFUSION_TOP_MEANS), either),
    ):
        arrays[kinds[0]] = pairs.astype(np.int32)
        arrays[kinds[1]] = pair_neurons.astype(np.int32)
        arrays[kinds[2]] = pair_means.astype(np.float32)
    return arrays


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.numpy()
