"""A record's values as TensorBoard summaries, and where summaries go (sinks).

Needs only NumPy and TensorBoard's protobufs: arrays become ``Summary`` protos
following the schema in ``tensorboard_plugin_deephys.log.metadata``; a
:class:`RecordSink` notes a record's Deephys tags and passes its values on merged,
to an event sink such as :class:`EventFileSink` (TensorBoard's public
``EventFileWriter``).

Example::

    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    sink = EventFileSink(EventFileWriter("logs/run"))
    sink.add_summary(tensor_summary(Kind.MAXIMA, maxima, layer="fc1", dataset="mnist"), 3)
    sink.flush()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.util import tensor_util

from tensorboard_plugin_deephys.log import metadata
from tensorboard_plugin_deephys.log.metadata import Kind, create_summary_metadata, tag_name


class RecordCancelled(Exception):
    """A record stopped before its end (the run failed): its document is not written."""


class SummarySink(Protocol):
    """Where summaries go: an event file, usually the logger's own."""

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None: ...

    def flush(self) -> None: ...


class EventFileSink:
    """Writes through TensorBoard's ``EventFileWriter``: the callback's own event file."""

    def __init__(self, writer) -> None:
        self._writer = writer

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


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


class RecordSink:
    """A sink for one record's summaries: it notes the Deephys tags among them (the
    record lists them, so that a reader can tell a complete record from one whose
    arrays were lost) and passes them on merged, several values to an event.

    An event per value cost a wait on the event writer's queue per value (two
    hundred a record for the demo); merged, values go out once ``merge_bytes`` of
    them are pending, and on ``flush``. A value larger than that goes out alone, so
    no event nears protobuf's 2 GiB limit by merging.
    """

    def __init__(
        self,
        sink: SummarySink,
        step: int,
        merge_bytes: int = 4 << 20,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._sink = sink
        self._cancelled = cancelled
        self._step = step
        self._merge_bytes = merge_bytes
        self._pending = summary_pb2.Summary()
        self._pending_bytes = 0
        self.deephys_tags: set[str] = set()

    def add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        if step != self._step:
            raise ValueError(f"a record's summaries are all at step {self._step}, not {step}")
        if self._cancelled is not None and self._cancelled():
            raise RecordCancelled(f"the record at step {step} was stopped before its end")
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
