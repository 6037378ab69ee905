"""The writing wing: a gathered epoch becomes a record, computed first, then written.

One direction, no return: ``view_data`` (pure: the gathered rows as recordings, and
everything a record holds as a ``RecordView``) -> ``events`` (writes a view as
TensorBoard summaries through ``summaries`` and thumbnail packs as plugin assets).
``record_writer.RecordWriter`` is what the callback talks to: destinations
(``destinations``), what a run holds (``log_state``), the one thumbnail policy
(``thumbnail_policy``, with ``thumbnail_encoding``), the failure policy and the event
files of its own.

Example::

    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    write_record(sink, record, {"mnist": DatasetRecording(labels, preds, {"fc1": acts})},
                 log_dir="logs/run")
"""

from deephys_lightning.writing.events import write_record, write_view
from deephys_lightning.writing.summaries import EventFileSink, SummarySink
from deephys_lightning.writing.view_data import DatasetRecording, RecordView, record_view

__all__ = [
    "DatasetRecording",
    "EventFileSink",
    "RecordView",
    "SummarySink",
    "record_view",
    "write_record",
    "write_view",
]
