"""The log format shared by writer and reader: metadata, array chunks, records, assets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.compat.proto import summary_pb2

from deephys_lightning.writing import DatasetRecording, write_record
from deephys_lightning.writing.summaries import (
    array_blob_summary,
    blob_summary,
    tensor_proto,
    tensor_summary,
)
from tensorboard_plugin_deephys.log import metadata
from tensorboard_plugin_deephys.log.metadata import Kind, Record, ThumbnailReference


@pytest.mark.parametrize("dtype", [np.float16, np.uint8, np.int32])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 128, metadata.MAX_CHUNK_BYTES])
def test_array_chunks_round_trip(dtype, chunk_bytes):
    array = (np.arange(5 * 7 * 3) % 250).astype(dtype).reshape(5, 7, 3)
    chunks = metadata.encode_chunks(array, chunk_bytes=chunk_bytes)
    assert all(len(c) <= chunk_bytes for c in chunks)
    out = metadata.decode_chunks(chunks)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, array)


def test_large_arrays_are_split_into_chunks_of_at_most_8_mib():
    array = np.zeros((3000, 2048), dtype=np.float16)  # 12 MiB
    summary = array_blob_summary(Kind.ACTIVATIONS, array, layer="fc", dataset="d")
    blobs = summary.value[0].tensor.string_val
    assert len(blobs) == 2
    assert max(map(len, blobs)) <= 8 * 1024 * 1024


def test_summaries_carry_plugin_name_content_and_data_class():
    # what the writer puts in a thumbnails blob: a reference to the asset file
    reference = ThumbnailReference(
        file=metadata.thumbnail_asset_name("a/b", "0" * 32), count=1, shape=(2, 2, 3)
    )
    blob = blob_summary(Kind.THUMBNAILS, [reference.to_json()], dataset="a/b")
    tensor = tensor_summary(Kind.LABELS, np.zeros(3, np.int32), dataset="a/b")
    for summary, data_class in (
        (blob, summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
        (tensor, summary_pb2.DATA_CLASS_TENSOR),
    ):
        value = summary.value[0]
        assert value.metadata.plugin_data.plugin_name == "deephys"
        assert value.metadata.data_class == data_class
        content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
        assert content.dataset == "a/b"
    # a "/" in a user's dataset name cannot make tags ambiguous
    assert blob.value[0].tag == "deephys.data/a%2Fb/thumbnails"


def test_newer_or_malformed_content_is_skipped():
    newer = json.dumps({"version": metadata.CONTENT_VERSION + 1, "kind": "labels"}).encode()
    assert metadata.parse_plugin_content(newer) is None
    assert metadata.parse_plugin_content(b"not json") is None
    assert metadata.parse_plugin_content(b'{"version": 1, "kind": "what"}') is None


def test_record_json_round_trip():
    record = Record(
        step=5,
        epoch=1,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=("a", "b"),
        num_images={"ind": 3, "ood": 4},
        top_k=8,
    )
    assert Record.from_json(record.to_json()) == record
    assert record.ind == "ind" and record.ood == ("ood",)
    newer = json.loads(record.to_json())
    newer["version"] = metadata.CONTENT_VERSION + 1
    assert Record.from_json(json.dumps(newer).encode()) is None
    assert Record.from_json(b"{}") is None


def test_tag_names_need_their_parts():
    with pytest.raises(ValueError, match="layer and a dataset"):
        metadata.tag_name(Kind.ACTIVATIONS, dataset="d")
    with pytest.raises(ValueError, match="need a dataset"):
        metadata.tag_name(Kind.LABELS)


def test_thumbnail_reference_round_trip_and_refuses_foreign_files():
    name = metadata.thumbnail_asset_name("cifar10..2/x", "ab" * 16)
    assert ".." not in name and "/" not in name.removeprefix("thumbnails/")
    metadata.asset_path("run", name)  # a name the reader accepts
    reference = ThumbnailReference(file=name, count=7, shape=(8, 8, 3))
    assert ThumbnailReference.from_json(reference.to_json()) == reference
    for raw in (b"not json", b"{}", b'{"file": "../../etc/passwd"}', b'{"file": 3}'):
        with pytest.raises(ValueError, match="thumbnail reference|not a Deephys asset name"):
            ThumbnailReference.from_json(raw)


def test_the_resume_state_lives_beside_the_thumbnails(tmp_path):
    run = str(tmp_path)
    assert metadata.state_path(run) == str(tmp_path / "plugins" / "deephys" / "state.json")
    name = metadata.thumbnail_asset_name("d", "0" * 32)
    assert metadata.asset_path(run, name).startswith(str(tmp_path / "plugins" / "deephys"))


class ListSink:
    """A sink that keeps the summaries it is handed, as events would hold them."""

    def __init__(self) -> None:
        self.events: list[summary_pb2.Summary] = []

    def add_summary(self, summary, step) -> None:
        self.events.append(summary)

    def flush(self) -> None:
        pass


def test_a_record_goes_out_in_few_events_and_alone_last():
    """Small values share events (a wait on the writer's queue each, otherwise); an
    array larger than the bound goes alone; the record is the last event, alone, so
    that the scan for records finds it in an event's first bytes."""
    rng = np.random.default_rng(0)
    n, m = 3000, 2048
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 4, n),
            predictions=rng.integers(0, 4, n),
            activations={"fc": rng.random((n, m)).astype(np.float16)},  # 12 MiB
        )
        for name in ("ind", "ood")
    }
    record = Record(
        step=2,
        epoch=0,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=("a", "b", "c", "d"),
        num_images={"ind": n, "ood": n},
        top_k=4,
    )
    sink = ListSink()
    write_record(sink, record, recordings, layout="events")
    values = [value for event in sink.events for value in event.value]
    assert len(sink.events) < len(values) / 5
    last = sink.events[-1]
    assert [value.tag for value in last.value] == ["deephys.data/record"]
    written = Record.from_json(last.value[0].tensor.string_val[0])
    assert set(written.arrays) == {v.tag for v in values if v.tag.startswith("deephys.data/")} - {
        "deephys.data/record"
    }
    for event in sink.events:
        assert len(event.value) == 1 or event.ByteSize() <= 4 << 20
    matrices = [e for e in sink.events if e.value[0].tag.endswith("/activations")]
    assert len(matrices) == 2 and all(len(e.value) == 1 for e in matrices)


@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.float16, np.float32, np.float64, np.uint8, np.bool_]
)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (2,), (3, 0), (4, 5), (2, 1, 3)])
def test_tensor_protos_are_the_bytes_tensorboard_makes(dtype, shape):
    from tensorboard.util import tensor_util

    array = (np.arange(int(np.prod(shape))) % 3).astype(dtype).reshape(shape)
    expected = tensor_util.make_tensor_proto(np.ascontiguousarray(array)).SerializeToString()
    assert tensor_proto(array).SerializeToString() == expected
    assert tensor_proto(np.asfortranarray(array)).SerializeToString() == expected
