"""Write Deephys records as TensorBoard summaries.

Needs only NumPy and TensorBoard's protobufs (no Lightning): the callback gathers
arrays, this module turns them into ``Summary`` protos following the schema in
``tb_plugin.metadata``, and an event sink appends them to an event file.

Example::

    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    sink = EventFileSink(EventFileWriter("logs/run"))
    write_record(sink, record, {"mnist": DatasetRecording(labels, preds, {"fc1": acts})})
    sink.flush()
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Protocol

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.util import tensor_util

from deephys_lightning import metrics
from tb_plugin import array_codec, assets
from tb_plugin.metadata import Kind, Record, create_summary_metadata, scalar_tag, tag_name


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
        thumbnails: uint8 [N, H, W, 3], or None when already written for this dataset.
        positions: int [N] index in the dataset of each image (default 0..N-1).
        thumbnails_digest: the thumbnails' content digest, when already computed.
        logits: float [N, C] classifier outputs, or None when not recorded.
    """

    labels: np.ndarray
    predictions: np.ndarray
    activations: dict[str, np.ndarray]
    thumbnails: np.ndarray | None = None
    positions: np.ndarray | None = None
    thumbnails_digest: str | None = None
    logits: np.ndarray | None = None


def tensor_summary(
    kind: Kind, array: np.ndarray, *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.Summary:
    """A summary holding ``array`` as a tensor with Deephys metadata."""
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag_name(kind, layer=layer, dataset=dataset),
        metadata=create_summary_metadata(kind, layer=layer, dataset=dataset),
        tensor=tensor_util.make_tensor_proto(np.ascontiguousarray(array)),
    )
    return summary


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
    return blob_summary(kind, array_codec.encode_chunks(array), layer=layer, dataset=dataset)


def writes_matrix(nbytes: int, max_activation_bytes: int | None) -> bool:
    """Whether :func:`write_record` writes a float16 activation matrix of ``nbytes``."""
    return max_activation_bytes is None or nbytes <= max_activation_bytes


# How many top neurons are kept per image for the image view.
IMAGE_TOP_NEURONS = 16


def write_record(
    sink: SummarySink,
    record: Record,
    recordings: dict[str, DatasetRecording],
    *,
    log_dir: str | None = None,
    max_activation_bytes: int | None = None,
) -> None:
    """Write one recorded validation epoch at ``record.step``.

    For each dataset: labels, predictions, positions, the accuracy scalar, the
    classifier outputs (when given) and thumbnails (when given), written as an asset
    file under ``log_dir`` (the run directory the sink writes to) with a reference in
    the events. For each layer and dataset:
    each neuron's top images, each image's top neurons by normalized activation, the
    category means, confusion-pair top neurons, and the float16 activation matrix
    while it is at most ``max_activation_bytes`` (None: always).
    For each layer and OOD set: per-neuron novelty, spurious score and activation
    ratio, their headline scalars and histograms.
    The record itself is written last, so a reader that sees it sees the rest too.
    """
    missing = [name for name in record.datasets if name not in recordings]
    if missing:
        raise ValueError(f"no recording for datasets {missing}")
    step = record.step
    num_classes = len(record.class_names)
    for name in record.datasets:
        _write_dataset(sink, step, name, recordings[name], log_dir)
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
        for name in record.datasets:
            full = writes_matrix(acts[name].nbytes, max_activation_bytes)
            _write_layer_arrays(
                sink,
                step,
                layer,
                name,
                acts[name],
                statistics[name][0],
                ind_max,
                record.top_k,
                full,
            )
            _write_confusion_neurons(
                sink, step, layer, name, acts[name], recordings[name], num_classes
            )
        for ood in record.ood:
            ood_means, ood_max = statistics[ood]
            scores = metrics.ood_scores(ind_means, ind_max, ood_means, ood_max)
            _write_scores(sink, step, layer, ood, scores)
    sink.add_summary(blob_summary(Kind.RECORD, [record.to_json()]), step)
    sink.flush()


def _write_dataset(
    sink: SummarySink, step: int, name: str, rec: DatasetRecording, log_dir: str | None
) -> None:
    labels = np.asarray(rec.labels, dtype=np.int32)
    predictions = np.asarray(rec.predictions, dtype=np.int32)
    sink.add_summary(tensor_summary(Kind.LABELS, labels, dataset=name), step)
    sink.add_summary(tensor_summary(Kind.PREDICTIONS, predictions, dataset=name), step)
    positions = np.arange(len(labels)) if rec.positions is None else rec.positions
    sink.add_summary(
        tensor_summary(Kind.POSITIONS, np.asarray(positions, dtype=np.int32), dataset=name), step
    )
    if rec.logits is not None:
        logits = np.asarray(rec.logits, dtype=np.float32)
        sink.add_summary(array_blob_summary(Kind.LOGITS, logits, dataset=name), step)
    if len(labels):
        accuracy = float(np.mean(labels == predictions))
        sink.add_summary(scalar_pb(scalar_tag("accuracy", dataset=name), accuracy), step)
    if rec.thumbnails is not None:
        if log_dir is None:
            raise ValueError("writing thumbnails needs the run's log_dir (they are assets)")
        thumbnails = np.asarray(rec.thumbnails, dtype=np.uint8)
        reference = {
            "file": assets.write_thumbnails(log_dir, name, thumbnails, rec.thumbnails_digest),
            "count": int(thumbnails.shape[0]),
            "shape": list(thumbnails.shape[1:]),
        }
        blob = json.dumps(reference).encode("utf-8")
        sink.add_summary(blob_summary(Kind.THUMBNAILS, [blob], dataset=name), step)


def _write_layer_arrays(
    sink: SummarySink,
    step: int,
    layer: str,
    name: str,
    acts: np.ndarray,
    means: np.ndarray,
    ind_max: np.ndarray,
    top_k: int,
    full: bool,
) -> None:
    names = {"layer": layer, "dataset": name}
    if full:
        sink.add_summary(array_blob_summary(Kind.ACTIVATIONS, acts, **names), step)
    indices, values = metrics.top_k(acts, top_k)
    sink.add_summary(tensor_summary(Kind.TOP_INDICES, indices.astype(np.int32), **names), step)
    sink.add_summary(tensor_summary(Kind.TOP_VALUES, values, **names), step)
    neurons, normalized = metrics.top_neurons(acts, ind_max, IMAGE_TOP_NEURONS)
    sink.add_summary(
        tensor_summary(Kind.IMAGE_TOP_NEURONS, neurons.astype(np.int32), **names), step
    )
    sink.add_summary(tensor_summary(Kind.IMAGE_TOP_VALUES, normalized, **names), step)
    sink.add_summary(tensor_summary(Kind.CATEGORY_MEANS, means, **names), step)


def _write_confusion_neurons(
    sink: SummarySink,
    step: int,
    layer: str,
    name: str,
    acts: np.ndarray,
    rec: DatasetRecording,
    num_classes: int,
) -> None:
    pairs, neurons, means = metrics.confusion_top_neurons(
        acts, rec.labels, rec.predictions, num_classes, IMAGE_TOP_NEURONS
    )
    names = {"layer": layer, "dataset": name}
    sink.add_summary(tensor_summary(Kind.PAIRS, pairs.astype(np.int32), **names), step)
    sink.add_summary(tensor_summary(Kind.PAIR_TOP_NEURONS, neurons.astype(np.int32), **names), step)
    sink.add_summary(tensor_summary(Kind.PAIR_TOP_MEANS, means.astype(np.float32), **names), step)


def _write_scores(
    sink: SummarySink, step: int, layer: str, ood: str, scores: metrics.OODScores
) -> None:
    names = {"layer": layer, "dataset": ood}
    for kind, values in (
        (Kind.NOVELTY, scores.novelty),
        (Kind.SPURIOUS, scores.spurious),
        (Kind.ACTIVATION_RATIO, scores.activation_ratio),
    ):
        sink.add_summary(tensor_summary(kind, values.astype(np.float32), **names), step)
    for scalar, value in scores.summary().items():
        sink.add_summary(scalar_pb(scalar_tag(scalar, layer=layer, dataset=ood), value), step)
    for name, values in (("novelty", scores.novelty), ("spurious", scores.spurious)):
        finite = values[np.isfinite(values)].astype(np.float64)
        if finite.size:
            tag = scalar_tag(name, layer=layer, dataset=ood)
            sink.add_summary(histogram_pb(tag, finite, buckets=30), step)
