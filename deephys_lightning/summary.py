"""Write Deephys records as TensorBoard summaries.

Needs only NumPy and TensorBoard's protobufs (no Lightning): the callback gathers
arrays, this module turns them into ``Summary`` protos following the schema in
``tensorboard_plugin_deephys.log.metadata`` (the log format), and an event sink appends them to an
event file.

Example::

    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    sink = EventFileSink(EventFileWriter("logs/run"))
    write_record(sink, record, {"mnist": DatasetRecording(labels, preds, {"fc1": acts})})
    sink.flush()
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Protocol

import numpy as np
import torch
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.util import tensor_util

from deephys_lightning import capture, detection, metrics, spatial_maps, thumbnail_encoding
from tensorboard_plugin_deephys.log import assets, derived, metadata
from tensorboard_plugin_deephys.log.metadata import (
    SCORE_KINDS,
    TOP_PREDICTIONS,
    Detection,
    Kind,
    Record,
    create_summary_metadata,
    detection_tag,
    scalar_tag,
    tag_name,
)


class SummarySink(Protocol):
    """Where summaries go: an event file, usually the logger's own."""

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None: ...

    def flush(self) -> None: ...


class EventFileSink:
    """Writes through TensorBoard's ``EventFileWriter`` (used when there is no logger)."""

    def __init__(self, writer) -> None:
        self._writer = writer

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class FileWriterSink:
    """Writes through a ``torch.utils.tensorboard`` file writer (the TensorBoardLogger's)."""

    def __init__(self, file_writer) -> None:
        self._file_writer = file_writer

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self._file_writer.add_summary(summary, global_step=step)

    def flush(self) -> None:
        self._file_writer.flush()


@dataclasses.dataclass
class DatasetRecording:
    """What one dataset contributes to a record.

    Args:
        labels: int [N] ground-truth classes.
        predictions: int [N] predicted classes.
        activations: layer name -> float [N, M] activations (after ReLU and reduction).
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
    """

    labels: np.ndarray
    predictions: np.ndarray
    activations: dict[str, np.ndarray]
    thumbnails: np.ndarray | assets.Thumbnails | None = None
    positions: np.ndarray | None = None
    logits: np.ndarray | None = None
    logit_scores: np.ndarray | None = None
    top_classes: np.ndarray | None = None
    top_probabilities: np.ndarray | None = None
    top_maps: dict[str, spatial_maps.TopMaps] = dataclasses.field(default_factory=dict)

    def top_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """int32 ``[N, k]`` top classes and float32 ``[N, k]`` their probabilities, or
        None without them and without logits."""
        given = (self.top_classes, self.top_probabilities)
        if given[0] is None and given[1] is None:
            if self.logits is None:
                return None
            logits = torch.from_numpy(np.asarray(self.logits))
            given = tuple(t.numpy() for t in capture.top_predictions(logits, TOP_PREDICTIONS))
        if any(array is None for array in given):
            raise ValueError("top_classes and top_probabilities go together; got only one")
        classes = np.asarray(given[0], dtype=np.int32)
        probabilities = np.asarray(given[1], dtype=np.float32)
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


def tensor_summary(
    kind: Kind, array: np.ndarray, *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.Summary:
    """A summary holding ``array`` as a tensor with Deephys metadata."""
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag_name(kind, layer=layer, dataset=dataset),
        metadata=create_summary_metadata(kind, layer=layer, dataset=dataset),
        tensor=tensor_proto(array),
    )
    return summary


# The dtypes TensorBoard's make_tensor_proto stores as raw bytes (tensor_content).
_RAW_DTYPES = {
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
}


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """``array`` as a TensorProto, byte for byte what ``tensor_util.make_tensor_proto``
    makes, built directly for the arrays it stores raw (its generic path costs a
    hundred summaries' worth of time on a small record)."""
    array = np.ascontiguousarray(array)
    dtype = _RAW_DTYPES.get(array.dtype)
    if dtype is None or array.size < 2 or array.nbytes >= 1 << 31:
        return tensor_util.make_tensor_proto(array)  # its own values fields, or its error
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=array.tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def blob_summary(
    kind: Kind, blobs: list[bytes], *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.Summary:
    """A summary holding ``blobs`` as a blob sequence with Deephys metadata."""
    summary = summary_pb2.Summary()
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=blobs)
    tensor.tensor_shape.dim.add(size=len(blobs))
    summary.value.add(
        tag=tag_name(kind, layer=layer, dataset=dataset),
        metadata=create_summary_metadata(kind, layer=layer, dataset=dataset),
        tensor=tensor,
    )
    return summary


def array_blob_summary(
    kind: Kind, array: np.ndarray, *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.Summary:
    """A blob-sequence summary holding ``array`` as ``.npy`` chunks."""
    return blob_summary(kind, metadata.encode_chunks(array), layer=layer, dataset=dataset)


def value_summary(
    kind: Kind, array: np.ndarray, *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.Summary:
    """The summary of one array of ``kind``: ``.npy`` chunks for blob kinds, else a tensor."""
    make = array_blob_summary if kind in metadata.BLOB_KINDS else tensor_summary
    return make(kind, array, layer=layer, dataset=dataset)


def writes_matrix(nbytes: int, max_activation_bytes: int | None) -> bool:
    """Whether :func:`write_record` writes a float16 activation matrix of ``nbytes``."""
    return max_activation_bytes is None or nbytes <= max_activation_bytes


def write_record(
    sink: SummarySink,
    record: Record,
    recordings: dict[str, DatasetRecording],
    *,
    log_dir: str | None = None,
    max_activation_bytes: int | None = None,
    detectors: tuple[str, ...] = (),
    scalars: bool = True,
    histograms: bool = True,
) -> None:
    """Write one recorded validation epoch at ``record.step``.

    For each dataset: labels, predictions, positions, the accuracy scalar, each
    image's top classes and their probabilities (when given, or computed from the
    logits), the classifier outputs (when given) and thumbnails (when given), written
    as an asset file under ``log_dir`` (the run directory the sink writes to) with a
    reference in the events. For each layer and dataset: the view data of
    :func:`layer_arrays` (the float16 activation matrix only while it is at most
    ``max_activation_bytes``; None: always), and the maps of its top images where the
    recording has them (``top_maps``). For each layer and OOD set: per-neuron
    novelty, spurious score and activation ratio, their headline scalars and
    histograms. For each OOD set: the metrics of the OOD ``detectors``
    (``detection.DETECTORS``; the logit ones need every dataset's logits or logit
    scores), as a ``detection`` blob and scalars.
    ``scalars`` / ``histograms`` False leave out what TensorBoard's own tabs show (the
    Deephys tab reads none of it). The record itself is written last, so a reader that
    sees it sees the rest too.
    """
    missing = [name for name in record.datasets if name not in recordings]
    if missing:
        raise ValueError(f"no recording for datasets {missing}")
    step = record.step
    sink = _RecordSink(sink, step)
    num_classes = len(record.class_names)
    for name in record.datasets:
        _write_dataset(sink, step, name, recordings[name], log_dir, scalars)
    detections: dict[str, list[Detection]] = {ood: [] for ood in record.ood}
    if any(d in detection.LOGIT_DETECTORS for d in detectors):
        logit_scores = {name: recordings[name].detector_scores() for name in record.datasets}
        without = [name for name, scores in logit_scores.items() if scores is None]
        if without:
            raise ValueError(
                f"the logit detectors in {list(detectors)} need logits or logit_scores for "
                f"every dataset; {without} have neither"
            )
        found = detection.logit_detections(logit_scores, ind=record.ind, detectors=detectors)
        for ood, rows in found.items():
            detections[ood] += rows
    for layer in record.layers:
        # One source of truth: everything is computed on the stored float16 values.
        acts = {
            name: np.asarray(recordings[name].activations[layer], dtype=np.float16)
            for name in record.datasets
        }
        statistics = {
            name: metrics.dataset_statistics(acts[name], recordings[name].labels, num_classes)
            for name in record.datasets
        }
        ind_means, ind_max = statistics[record.ind]
        # One histogram range per neuron for every dataset, written with the InD set's.
        value_range = metrics.histogram_range(list(acts.values()))
        for name in record.datasets:
            arrays = layer_arrays(
                acts[name],
                recordings[name],
                statistics[name],
                ind_max,
                num_classes=num_classes,
                top_k=record.top_k,
                full=writes_matrix(acts[name].nbytes, max_activation_bytes),
                value_range=value_range,
            )
            if name == record.ind:
                arrays[Kind.HISTOGRAM_RANGE] = value_range
            for kind, array in arrays.items():
                sink.add_summary(value_summary(kind, array, layer=layer, dataset=name), step)
            _write_top_maps(sink, step, layer, name, recordings[name], arrays[Kind.TOP_INDICES])
        for ood in record.ood:
            ood_means, ood_max = statistics[ood]
            scores = metrics.ood_scores(ind_means, ind_max, ood_means, ood_max)
            _write_scores(sink, step, layer, ood, scores, scalars, histograms)
        if any(d in detection.FEATURE_DETECTORS for d in detectors):
            found = detection.feature_detections(
                layer,
                acts,
                ind=record.ind,
                ind_labels=recordings[record.ind].labels,
                num_classes=num_classes,
                detectors=detectors,
            )
            for ood, rows in found.items():
                detections[ood] += rows
    if detectors:
        for ood, rows in detections.items():
            _write_detections(sink, step, ood, rows, scalars)
    record = dataclasses.replace(record, arrays=tuple(sorted(sink.deephys_tags)))
    sink.send_pending()  # the record goes last and alone: the scan for records reads its head
    sink.add_summary(blob_summary(Kind.RECORD, [record.to_json()]), step)
    sink.flush()


class _RecordSink:
    """A sink for one record's summaries: it notes the Deephys tags among them (the
    record lists them, so that a reader can tell a complete record from one whose
    arrays were lost) and passes them on merged, several values to an event.

    An event per value cost a wait on the event writer's queue per value (two
    hundred a record for the demo); merged, values go out once ``merge_bytes`` of
    them are pending, and on ``flush``. A value larger than that goes out alone, so
    no event nears protobuf's 2 GiB limit by merging.
    """

    def __init__(self, sink: SummarySink, step: int, merge_bytes: int = 4 << 20) -> None:
        self._sink = sink
        self._step = step
        self._merge_bytes = merge_bytes
        self._pending = summary_pb2.Summary()
        self._pending_bytes = 0
        self.deephys_tags: set[str] = set()

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        if step != self._step:
            raise ValueError(f"a record's summaries are all at step {self._step}, not {step}")
        for value in summary.value:
            if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                self.deephys_tags.add(value.tag)
        size = summary.ByteSize()
        if self._pending_bytes + size > self._merge_bytes:
            self.send_pending()
        if size > self._merge_bytes:
            self._sink.add_summary(summary, step)
            return
        self._pending.value.extend(summary.value)
        self._pending_bytes += size

    def send_pending(self) -> None:
        """Pass on the values merged so far, as one event."""
        if self._pending.value:
            self._sink.add_summary(self._pending, self._step)
        self._pending = summary_pb2.Summary()
        self._pending_bytes = 0

    def flush(self) -> None:
        self.send_pending()
        self._sink.flush()


def layer_arrays(
    acts: np.ndarray,
    recording: DatasetRecording,
    statistics: tuple[np.ndarray, np.ndarray],
    ind_max: np.ndarray,
    *,
    num_classes: int,
    top_k: int,
    full: bool,
    value_range: np.ndarray | None = None,
) -> dict[Kind, np.ndarray]:
    """The view data of one layer on one dataset, by kind, in the stored dtypes.

    ``statistics`` are the dataset's category means and per-neuron maxima
    (``metrics.dataset_statistics``), ``ind_max`` the InD maxima that normalize it.
    ``full`` adds the activation matrix itself. ``value_range`` (float32 ``[M, 2]``,
    ``metrics.histogram_range`` of every dataset of the record; None: of this one)
    is the range of the activation histograms, written once per layer by the caller.
    Pure: computing is kept apart from writing.
    """
    means, maxima = statistics
    arrays: dict[Kind, np.ndarray] = {}
    if full:
        arrays[Kind.ACTIVATIONS] = acts
    indices, values = metrics.top_k(acts, top_k)
    arrays[Kind.TOP_INDICES] = indices.astype(np.int32)
    arrays[Kind.TOP_VALUES] = values.astype(np.float32)
    if value_range is None:
        value_range = metrics.histogram_range([acts])
    found = metrics.neuron_distributions(
        acts,
        value_range,
        maxima,
        k=top_k,
        bins=metadata.HISTOGRAM_BINS,
        bands=metadata.INTERVAL_BANDS,
        per_band=metadata.INTERVAL_IMAGES,
    )
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
    directed, either = metrics.confusion_sets_top_neurons(
        acts, recording.labels, recording.predictions, num_classes, metadata.TOP_NEURONS, ind_max
    )
    for kinds, (pairs, pair_neurons, pair_means) in (
        ((Kind.PAIRS, Kind.PAIR_TOP_NEURONS, Kind.PAIR_TOP_MEANS), directed),
        ((Kind.CONFUSIONS, Kind.CONFUSION_TOP_NEURONS, Kind.CONFUSION_TOP_MEANS), either),
    ):
        arrays[kinds[0]] = pairs.astype(np.int32)
        arrays[kinds[1]] = pair_neurons.astype(np.int32)
        arrays[kinds[2]] = pair_means.astype(np.float32)
    return arrays


def _write_dataset(
    sink: SummarySink,
    step: int,
    name: str,
    rec: DatasetRecording,
    log_dir: str | None,
    scalars: bool = True,
) -> None:
    labels = np.asarray(rec.labels, dtype=np.int32)
    predictions = np.asarray(rec.predictions, dtype=np.int32)
    positions = np.arange(len(labels)) if rec.positions is None else rec.positions
    arrays = {
        Kind.LABELS: labels,
        Kind.PREDICTIONS: predictions,
        Kind.POSITIONS: np.asarray(positions, dtype=np.int32),
    }
    if rec.logits is not None:
        arrays[Kind.LOGITS] = np.asarray(rec.logits, dtype=np.float32)
    top = rec.top_predictions()
    if top is not None:
        arrays[Kind.TOP_CLASSES], arrays[Kind.TOP_PROBABILITIES] = top
    for kind, array in arrays.items():
        sink.add_summary(value_summary(kind, array, dataset=name), step)
    if scalars and len(labels):
        accuracy = derived.accuracy(labels, predictions)
        sink.add_summary(scalar_pb(scalar_tag("accuracy", dataset=name), accuracy), step)
    if rec.thumbnails is not None:
        if log_dir is None:
            raise ValueError("writing thumbnails needs the run's log_dir (they are assets)")
        thumbnails = assets.Thumbnails.of(rec.thumbnails)
        reference = metadata.ThumbnailReference(
            file=assets.write_thumbnail_pack(log_dir, name, thumbnails, thumbnail_encoding.encode),
            count=int(thumbnails.pixels.shape[0]),
            shape=tuple(thumbnails.pixels.shape[1:]),
        )
        sink.add_summary(blob_summary(Kind.THUMBNAILS, [reference.to_json()], dataset=name), step)


def _write_top_maps(
    sink: SummarySink,
    step: int,
    layer: str,
    name: str,
    rec: DatasetRecording,
    top_indices: np.ndarray,
) -> None:
    """The maps of a layer's top images on one dataset, where they were kept. Maps that
    belong to other images than ``top_indices`` are left out with a warning that says
    so; the rest of the record is written."""
    found = rec.top_maps.get(layer)
    if found is None:
        return
    positions = np.arange(len(rec.labels)) if rec.positions is None else rec.positions
    try:
        maps = spatial_maps.top_image_maps(found, positions, top_indices, layer=layer, dataset=name)
    except ValueError as error:
        warnings.warn(str(error), stacklevel=2)
        return
    sink.add_summary(value_summary(Kind.TOP_MAPS, maps, layer=layer, dataset=name), step)


def _write_scores(
    sink: SummarySink,
    step: int,
    layer: str,
    ood: str,
    scores: derived.OODScores,
    scalars: bool = True,
    histograms: bool = True,
) -> None:
    names = {"layer": layer, "dataset": ood}
    for kind, field in SCORE_KINDS.items():
        values = np.asarray(getattr(scores, field), dtype=np.float32)
        sink.add_summary(tensor_summary(kind, values, **names), step)
    if scalars:
        for scalar, value in scores.summary().items():
            sink.add_summary(scalar_pb(scalar_tag(scalar, layer=layer, dataset=ood), value), step)
    if not histograms:
        return
    alive = ~scores.dead
    for name in ("novelty", "spurious"):
        values = np.asarray(getattr(scores, name))[alive]
        finite = values[np.isfinite(values)].astype(np.float64)
        if finite.size:
            tag = scalar_tag(name, layer=layer, dataset=ood)
            sink.add_summary(histogram_pb(tag, finite, buckets=30), step)


def _write_detections(
    sink: SummarySink, step: int, ood: str, rows: list[Detection], scalars: bool = True
) -> None:
    blob = Detection.list_to_json(rows)
    sink.add_summary(blob_summary(Kind.DETECTION, [blob], dataset=ood), step)
    for row in rows if scalars else ():
        for metric in metadata.DETECTION_METRICS:
            tag = detection_tag(row.detector, metric, dataset=ood, layer=row.layer)
            sink.add_summary(scalar_pb(tag, getattr(row, metric)), step)
