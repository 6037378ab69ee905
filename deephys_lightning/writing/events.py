"""Write a computed record (a ``RecordView``) as plugin assets and TensorBoard events.

:func:`write_view` is the one place a record is written. First the assets under the
run's ``plugins/deephys/``: the thumbnail packs of sets whose images are new, then
one step pack (``log/step_pack.py``) with every array of the step (each dataset's
labels, predictions..., each layer's view data and maps, the scores) and its JSON
documents (thumbnail references, detection rows). Then the events, which TensorBoard
holds in memory: only the scalars (accuracy, scores, detection metrics), the score
histograms and, last, the record document, which names the pack (a reader that sees
the record sees the rest). It computes nothing: see ``view_data``.
:func:`write_record` does both steps for callers that hold recordings.

Example::

    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    sink = EventFileSink(EventFileWriter("logs/run"))
    write_record(sink, record, {"mnist": DatasetRecording(labels, preds, {"fc1": acts})},
                 log_dir="logs/run")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb

from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.writing import thumbnail_encoding
from deephys_lightning.writing.summaries import (
    RecordCancelled,
    RecordSink,
    SummarySink,
    blob_summary,
    value_summary,
)
from deephys_lightning.writing.view_data import DatasetRecording, RecordView, record_view
from tensorboard_plugin_deephys.log import assets, derived, metadata, step_pack
from tensorboard_plugin_deephys.log.metadata import (
    SCORE_KINDS,
    Detection,
    Kind,
    Record,
    detection_tag,
    scalar_tag,
    tag_name,
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
    layout: str = "packs",
    heads: Mapping[str, LinearHead] | None = None,
) -> RecordView:
    """Compute (``view_data.record_view``, with the candidate linear ``heads``), then
    write (:func:`write_view`) one record at ``record.step``; returns what was written."""
    view = record_view(
        record,
        recordings,
        max_activation_bytes=max_activation_bytes,
        detectors=detectors,
        heads=heads,
    )
    write_view(sink, view, log_dir=log_dir, scalars=scalars, histograms=histograms, layout=layout)
    return view


LAYOUTS = ("packs", "events")


def write_view(
    sink: SummarySink,
    view: RecordView,
    *,
    log_dir: str | None = None,
    scalars: bool = True,
    histograms: bool = True,
    cancelled: Callable[[], bool] | None = None,
    layout: str = "packs",
) -> None:
    """Write ``view`` at its record's step into ``sink``, thumbnails as assets under
    ``log_dir`` (the run directory the sink writes to). ``scalars`` / ``histograms``
    False leave out what TensorBoard's own tabs show (the Deephys tab reads none of
    it). The record itself is written last (in the events layout alone, in the packs
    layout in one event with the step's scalars and histograms, after the pack).
    ``cancelled()`` true stops the writing (``RecordCancelled``) before the record.

    ``layout="packs"`` (the default) writes the step's arrays and documents into one
    step pack under ``log_dir`` (``log/step_pack.py``) and only the record, scalars
    and histograms into the events; ``"events"`` writes everything into the events,
    as logs before 0.3 hold it (kept to make such logs in tests).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if layout == "events":
        _write_events_layout(sink, view, log_dir, scalars, histograms, cancelled)
        return
    if log_dir is None:
        raise ValueError("writing a step pack needs the run's log_dir (packs are assets)")
    record = view.record
    step = record.step
    arrays: dict[str, np.ndarray] = {}
    documents: dict[str, bytes] = {}
    for kind, layer, dataset, value in _step_contents(view, log_dir, cancelled):
        tag = tag_name(kind, layer=layer, dataset=dataset)
        if isinstance(value, bytes):
            documents[tag] = value
        else:
            arrays[tag] = value
    written = step_pack.write_pack(log_dir, record, arrays, documents)
    if cancelled is not None and cancelled():
        raise RecordCancelled(f"the record at step {step} was cancelled")
    # One event: the record first (the scan for records reads an event's head), then
    # the step's scalars and histograms, so that a process killed while writing it
    # leaves all of them or none (a step written again after a resume never holds
    # its scalars twice).
    event = _Collected()
    event.add_summary(blob_summary(Kind.RECORD, [written.to_json()]), step)
    _write_tab_summaries(event, view, scalars, histograms)
    sink.add_summary(event.summary, step)
    sink.flush()


class _Collected:
    """A sink that gathers summaries' values into one summary (one event)."""

    def __init__(self) -> None:
        self.summary = summary_pb2.Summary()

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self.summary.value.extend(summary.value)

    def flush(self) -> None:
        """Nothing to send: the caller writes :attr:`summary` as one event."""


def _step_contents(
    view: RecordView, log_dir: str | None, cancelled: Callable[[], bool] | None
) -> Iterator[tuple[Kind, str | None, str | None, np.ndarray | bytes]]:
    """Every array (``numpy``) and JSON document (``bytes``) of ``view``'s step, as
    ``(kind, layer, dataset, value)``, in either layout; the thumbnail packs of sets
    whose images are new are written on the way."""
    record = view.record
    for name in record.datasets:
        for kind, array in view.datasets[name].items():
            yield kind, None, name, array
        if name in view.thumbnails:
            if log_dir is None:
                raise ValueError("writing thumbnails needs the run's log_dir (they are assets)")
            if cancelled is not None and cancelled():
                raise RecordCancelled(f"the record at step {record.step} was cancelled")
            yield (
                Kind.THUMBNAILS,
                None,
                name,
                _thumbnail_reference(name, view.thumbnails[name], log_dir),
            )
    for layer in record.layers:
        for name in record.datasets:
            for kind, array in view.layers[(layer, name)].items():
                yield kind, layer, name, array
        for ood in record.ood:
            scores = view.scores[(layer, ood)]
            for kind, field in SCORE_KINDS.items():
                yield kind, layer, ood, np.asarray(getattr(scores, field), dtype=np.float32)
    for ood, rows in view.detections.items():
        yield Kind.DETECTION, None, ood, Detection.list_to_json(rows)
    for name, found in view.calibration.items():
        yield Kind.CALIBRATION, None, name, found.to_json()


def _write_events_layout(
    sink: SummarySink,
    view: RecordView,
    log_dir: str | None,
    scalars: bool,
    histograms: bool,
    cancelled: Callable[[], bool] | None,
) -> None:
    """Every array in the events: the layout of logs before 0.3."""
    record = view.record
    step = record.step
    merged = RecordSink(sink, step, cancelled=cancelled)
    for kind, layer, dataset, value in _step_contents(view, log_dir, cancelled):
        if isinstance(value, bytes):
            summary = blob_summary(kind, [value], layer=layer, dataset=dataset)
        else:
            summary = value_summary(kind, value, layer=layer, dataset=dataset)
        merged.add_summary(summary, step)
    _write_tab_summaries(merged, view, scalars, histograms)
    written = dataclasses.replace(record, arrays=tuple(sorted(merged.deephys_tags)))
    merged.send_pending()  # the record goes last and alone: the scan for records reads its head
    merged.add_summary(blob_summary(Kind.RECORD, [written.to_json()]), step)
    merged.flush()


def _write_tab_summaries(
    sink: SummarySink, view: RecordView, scalars: bool, histograms: bool
) -> None:
    """What TensorBoard's own tabs show of a step: the accuracy, score and detection
    scalars and the score histograms (as ``scalars`` / ``histograms`` say)."""
    record = view.record
    step = record.step
    for name in record.datasets:
        if scalars and name in view.accuracy:
            tag = scalar_tag("accuracy", dataset=name)
            sink.add_summary(scalar_pb(tag, view.accuracy[name]), step)
    for layer in record.layers:
        for ood in record.ood:
            scores = view.scores[(layer, ood)]
            _write_score_summaries(sink, step, layer, ood, scores, scalars, histograms)
    for ood, rows in view.detections.items():
        _write_detection_scalars(sink, step, ood, rows, scalars)


def _thumbnail_reference(name: str, thumbnails: assets.Thumbnails, log_dir: str) -> bytes:
    """Write ``thumbnails`` as a pack (unless it exists) and return its reference."""
    reference = metadata.ThumbnailReference(
        file=assets.write_thumbnail_pack(log_dir, name, thumbnails, thumbnail_encoding.encode),
        count=int(thumbnails.pixels.shape[0]),
        shape=tuple(thumbnails.pixels.shape[1:]),
    )
    return reference.to_json()


def _write_score_summaries(
    sink: SummarySink,
    step: int,
    layer: str,
    ood: str,
    scores: derived.OODScores,
    scalars: bool = True,
    histograms: bool = True,
) -> None:
    """The scores' scalars and histograms, for TensorBoard's own tabs."""
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


def _write_detection_scalars(
    sink: SummarySink, step: int, ood: str, rows: list[Detection], scalars: bool = True
) -> None:
    for row in rows if scalars else ():
        for metric in metadata.DETECTION_METRICS:
            tag = detection_tag(row.detector, metric, dataset=ood, layer=row.layer)
            sink.add_summary(scalar_pb(tag, getattr(row, metric)), step)
