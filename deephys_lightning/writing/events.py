"""Write a computed record (a ``RecordView``) as TensorBoard events and plugin assets.

:func:`write_view` is the one place a record is written: each dataset's arrays, its
accuracy scalar and thumbnail pack (an asset under the run's ``plugins/deephys/``,
referenced from the events), each layer's view data and maps, the scores with their
scalars and histograms, the detection metrics, and, last, the record document itself
(a reader that sees it sees the rest). It computes nothing: see ``view_data``.
:func:`write_record` does both steps for callers that hold recordings.

Example::

    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    sink = EventFileSink(EventFileWriter("logs/run"))
    write_record(sink, record, {"mnist": DatasetRecording(labels, preds, {"fc1": acts})},
                 log_dir="logs/run")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb

from deephys_lightning.writing import thumbnail_encoding
from deephys_lightning.writing.summaries import (
    RecordSink,
    SummarySink,
    blob_summary,
    tensor_summary,
    value_summary,
)
from deephys_lightning.writing.view_data import DatasetRecording, RecordView, record_view
from tensorboard_plugin_deephys.log import assets, derived, metadata
from tensorboard_plugin_deephys.log.metadata import (
    SCORE_KINDS,
    Detection,
    Kind,
    Record,
    detection_tag,
    scalar_tag,
)


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
) -> RecordView:
    """Compute (``view_data.record_view``), then write (:func:`write_view`) one record
    at ``record.step``; returns what was written."""
    view = record_view(
        record, recordings, max_activation_bytes=max_activation_bytes, detectors=detectors
    )
    write_view(sink, view, log_dir=log_dir, scalars=scalars, histograms=histograms)
    return view


def write_view(
    sink: SummarySink,
    view: RecordView,
    *,
    log_dir: str | None = None,
    scalars: bool = True,
    histograms: bool = True,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Write ``view`` at its record's step into ``sink``, thumbnails as assets under
    ``log_dir`` (the run directory the sink writes to). ``scalars`` / ``histograms``
    False leave out what TensorBoard's own tabs show (the Deephys tab reads none of
    it). The record itself is written last and alone. ``cancelled()`` true stops the
    writing at the next summary (``RecordCancelled``), before the record."""
    record = view.record
    step = record.step
    merged = RecordSink(sink, step, cancelled=cancelled)
    for name in record.datasets:
        for kind, array in view.datasets[name].items():
            merged.add_summary(value_summary(kind, array, dataset=name), step)
        if scalars and name in view.accuracy:
            tag = scalar_tag("accuracy", dataset=name)
            merged.add_summary(scalar_pb(tag, view.accuracy[name]), step)
        if name in view.thumbnails:
            _write_thumbnails(merged, step, name, view.thumbnails[name], log_dir)
    for layer in record.layers:
        for name in record.datasets:
            for kind, array in view.layers[(layer, name)].items():
                merged.add_summary(value_summary(kind, array, layer=layer, dataset=name), step)
        for ood in record.ood:
            _write_scores(merged, step, layer, ood, view.scores[(layer, ood)], scalars, histograms)
    for ood, rows in view.detections.items():
        _write_detections(merged, step, ood, rows, scalars)
    written = dataclasses.replace(record, arrays=tuple(sorted(merged.deephys_tags)))
    merged.send_pending()  # the record goes last and alone: the scan for records reads its head
    merged.add_summary(blob_summary(Kind.RECORD, [written.to_json()]), step)
    merged.flush()


def _write_thumbnails(
    sink: RecordSink, step: int, name: str, thumbnails: assets.Thumbnails, log_dir: str | None
) -> None:
    if log_dir is None:
        raise ValueError("writing thumbnails needs the run's log_dir (they are assets)")
    reference = metadata.ThumbnailReference(
        file=assets.write_thumbnail_pack(log_dir, name, thumbnails, thumbnail_encoding.encode),
        count=int(thumbnails.pixels.shape[0]),
        shape=tuple(thumbnails.pixels.shape[1:]),
    )
    sink.add_summary(blob_summary(Kind.THUMBNAILS, [reference.to_json()], dataset=name), step)


def _write_scores(
    sink: RecordSink,
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
    sink: RecordSink, step: int, ood: str, rows: list[Detection], scalars: bool = True
) -> None:
    blob = Detection.list_to_json(rows)
    sink.add_summary(blob_summary(Kind.DETECTION, [blob], dataset=ood), step)
    for row in rows if scalars else ():
        for metric in metadata.DETECTION_METRICS:
            tag = detection_tag(row.detector, metric, dataset=ood, layer=row.layer)
            sink.add_summary(scalar_pb(tag, getattr(row, metric)), step)
