"""Change a run's events as a damaged log or a lenient loader would hand them on:
arrays altered, events dropped, with intact framing (so that only the checks on
read, not the CRCs, can tell). The copy is of the events layout (every array in the
events, as logs before 0.3 hold them: :func:`to_events_layout`), where these
damages can happen; a step pack's damages are in tests/log/test_step_packs.py."""

from __future__ import annotations

import glob
import os
import shutil

from deephys_lightning.event_files import RecordScanner


def rewrite_events(run_dir, out_dir, change):
    """Copy the run ``run_dir`` to ``out_dir``, passing each event of its event files
    (the logger's and the callback's own) through ``change`` (which returns the event,
    changed or not, or None to drop it; an event may hold several values); the framing
    of the new files is intact, as a loader that accepts bad records or drops them
    would hand the events on."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    to_events_layout(run_dir, out_dir)
    for path in glob.glob(os.path.join(out_dir, "events.out.tfevents.*")):
        events = [event_pb2.Event.FromString(raw) for raw in RecordScanner(path, [])]
        with open(path, "wb") as handle:
            writer = RecordWriter(handle)
            for event in events:
                changed = change(event)
                if changed is not None:
                    writer.write(changed.SerializeToString())


def to_events_layout(run_dir, out_dir):
    """Copy the run ``run_dir`` to ``out_dir`` in the events layout: each step pack's
    arrays and documents written into the events just before the record of its step
    (which then names no pack), the packs left out."""
    import json

    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from deephys_lightning.writing.summaries import blob_summary, value_summary
    from tensorboard_plugin_deephys.log import metadata, step_pack

    shutil.copytree(run_dir, out_dir)
    packs = {}
    for relative in step_pack.list_packs(str(out_dir)):
        pack = step_pack.StepPack.open(str(out_dir), relative)
        packs[relative] = pack
        os.remove(pack.path)
    for path in glob.glob(os.path.join(out_dir, "events.out.tfevents.*")):
        events = [event_pb2.Event.FromString(raw) for raw in RecordScanner(path, [])]
        with open(path, "wb") as handle:
            writer = RecordWriter(handle)
            for event in events:
                for value in event.summary.value:
                    content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
                    if content is None or content.kind is not metadata.Kind.RECORD:
                        continue
                    raw = json.loads(value.tensor.string_val[0])
                    pack = packs.get(raw.pop("pack", ""))
                    value.tensor.string_val[0] = json.dumps(raw).encode()
                    for summary in _pack_summaries(pack, blob_summary, value_summary):
                        written = event_pb2.Event(wall_time=event.wall_time, step=event.step)
                        written.summary.CopyFrom(summary)
                        writer.write(written.SerializeToString())
                writer.write(event.SerializeToString())


def _pack_summaries(pack, blob_summary, value_summary):
    """The summaries of a step pack's arrays and documents (none for ``None``)."""
    from tensorboard_plugin_deephys.log import metadata

    if pack is None:
        return
    record = pack.record
    seen = set()
    for kind in metadata.Kind:
        for layer in (None, *record.layers):
            for dataset in (None, *record.datasets):
                try:
                    tag = metadata.tag_name(kind, layer=layer, dataset=dataset)
                except ValueError:  # no tag of this kind names these
                    continue
                if tag in seen:  # a kind of datasets only, named again with a layer
                    continue
                seen.add(tag)
                if tag in pack.names:
                    yield value_summary(kind, pack.array(tag), layer=layer, dataset=dataset)
                elif tag in pack.documents:
                    yield blob_summary(kind, [pack.documents[tag]], layer=layer, dataset=dataset)


def tamper(tag, step, alter):
    """A ``change`` for :func:`rewrite_events`: ``alter`` the array of ``tag`` at ``step``."""
    from tensorboard.util import tensor_util

    def change(event):
        for value in event.summary.value if event.step == step else ():
            if value.tag == tag:
                array = alter(tensor_util.make_ndarray(value.tensor))
                value.tensor.CopyFrom(tensor_util.make_tensor_proto(array))
        return event

    return change


def drop_value(tag, step):
    """A ``change`` for :func:`rewrite_events`: drop the value of ``tag`` at ``step``
    (and its event, when nothing else is left in it)."""

    def change(event):
        if event.step != step or not any(value.tag == tag for value in event.summary.value):
            return event
        kept = [value for value in event.summary.value if value.tag != tag]
        if not kept:
            return None
        del event.summary.value[:]
        event.summary.value.extend(kept)
        return event

    return change


def with_legacy_thumbnails(run_dir, out_dir):
    """Copy the run ``run_dir`` to ``out_dir`` with its thumbnails as logs before 0.2
    held them: raw ``.npy`` pixels (and their checksums), referenced from the events."""
    import json

    import numpy as np

    from tensorboard_plugin_deephys.log import assets, metadata

    def change(event):
        for value in event.summary.value:
            content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
            if content is None or content.kind is not metadata.Kind.THUMBNAILS:
                continue
            reference = metadata.ThumbnailReference.from_json(value.tensor.string_val[0])
            pixels = np.asarray(assets.open_thumbnails(str(run_dir), reference.file))
            legacy = assets.write_thumbnails(str(out_dir), content.dataset, pixels)
            raw = json.loads(reference.to_json())
            value.tensor.string_val[0] = json.dumps({**raw, "file": legacy}).encode()
        return event

    rewrite_events(run_dir, out_dir, change)
    folder = os.path.join(out_dir, *metadata.ASSET_ROOT.split("/"), metadata.THUMBNAIL_DIR)
    for name in os.listdir(folder):
        if name.endswith(metadata.PACK_SUFFIX):
            os.remove(os.path.join(folder, name))


def sink_without(kinds):
    """A summary sink class that writes what a callback from before ``kinds`` existed
    wrote: no values of those kinds, and a record that does not list their tags.

    Example::

        sink = sink_without({Kind.TOP_CLASSES})(EventFileWriter(run_dir))
    """
    import json

    from tensorboard.compat.proto import summary_pb2

    from deephys_lightning.writing import EventFileSink
    from tensorboard_plugin_deephys.log import metadata

    left_out = frozenset(kinds)
    suffixes = tuple(f"/{kind.value}" for kind in left_out)

    class SinkWithout(EventFileSink):
        def add_summary(self, summary, step):
            kept = []
            for value in summary.value:
                content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
                if content is not None and content.kind in left_out:
                    continue
                if content is not None and content.kind is metadata.Kind.RECORD:
                    raw = json.loads(value.tensor.string_val[0])
                    raw["arrays"] = [t for t in raw["arrays"] if not t.endswith(suffixes)]
                    value.tensor.string_val[0] = json.dumps(raw).encode()
                kept.append(value)
            if kept:
                super().add_summary(summary_pb2.Summary(value=kept), step)

    return SinkWithout
