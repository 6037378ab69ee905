"""Step packs: one file of a step's arrays beside the events (log/step_pack.py).

The layout is safetensors': the library itself reads what the writer writes and
writes what the reader reads. Damage to a pack while it is served (truncated,
bit-flipped, deleted, replaced by another step's) answers 404 JSON naming the step
and the cause, and the server goes on; a writer killed mid-pack leaves no step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from plugin_client import plugin_client
from safetensors.numpy import load_file, save_file
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from deephys_lightning import read_log
from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log import step_pack
from tensorboard_plugin_deephys.log.metadata import Kind, Record, tag_name
from tensorboard_plugin_deephys.log.step_pack import PackError, StepPack

LAYER = "fc"
PREFIX = "/data/plugin/deephys"


def _record(step: int) -> Record:
    return Record(
        step=step,
        epoch=step // 2,
        layers=(LAYER,),
        datasets=("ind", "ood"),
        class_names=("a", "b", "c"),
        num_images={"ind": 30, "ood": 20},
        top_k=4,
    )


def _write_steps(run_dir, steps, seed: int = 0, ind_images: int = 30, neurons: int = 6) -> None:
    rng = np.random.default_rng(seed)
    sink = EventFileSink(EventFileWriter(str(run_dir)))
    for step in steps:
        recordings = {
            name: DatasetRecording(
                labels=rng.integers(0, 3, n),
                predictions=rng.integers(0, 3, n),
                activations={
                    LAYER: np.maximum(rng.normal(size=(n, neurons)), 0).astype(np.float16)
                },
                thumbnails=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
                logits=rng.normal(size=(n, 3)).astype(np.float32),
            )
            for name, n in (("ind", ind_images), ("ood", 20))
        }
        record = dataclasses.replace(_record(step), num_images={"ind": ind_images, "ood": 20})
        write_record(sink, record, recordings, log_dir=str(run_dir), detectors=("msp",))
    sink.close()


def test_the_safetensors_library_reads_a_pack_and_writes_one_we_read(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "deephys.data/ind/labels": rng.integers(0, 9, 7).astype(np.int32),
        "deephys.data/fc/ind/activations": rng.normal(size=(7, 5)).astype(np.float16),
        "deephys.data/fc/ind/top_values": np.array([[np.nan, np.inf, -np.inf]], np.float32),
        "deephys.data/fc/ind/pairs": np.zeros((0, 2), np.int32),
        "deephys.data/fc/ind/maxima": rng.normal(size=(5,)).astype(">f4"),  # big-endian in
    }
    written = step_pack.write_pack(str(tmp_path), _record(3), arrays, {"t/doc": b'{"a": 1}'})
    by_library = load_file(step_pack.pack_path(str(tmp_path), written.pack))
    pack = StepPack.open(str(tmp_path), written.pack)
    assert set(by_library) == set(pack.names) == set(arrays)
    for tag, array in arrays.items():
        np.testing.assert_array_equal(by_library[tag], array)
        np.testing.assert_array_equal(pack.array(tag), array)
        assert pack.array(tag).dtype == array.dtype.newbyteorder("<")
    assert pack.documents == {"t/doc": b'{"a": 1}'}
    assert pack.record.pack == written.pack and pack.record.step == 3
    assert written.arrays == tuple(sorted([*arrays, "t/doc"]))

    # A pack the library writes, with our metadata, is one we read.
    relative = step_pack.pack_name(5)
    raw = Path(pack.path).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    doc = json.loads(header["__metadata__"]["deephys"])
    doc["record"] = {**doc["record"], "step": 5, "pack": relative}
    doc["step"] = 5
    path = step_pack.pack_path(str(tmp_path), relative)
    save_file(
        {tag: np.ascontiguousarray(a, a.dtype.newbyteorder("<")) for tag, a in arrays.items()},
        path,
        metadata={"deephys": json.dumps(doc)},
    )
    other = StepPack.open(str(tmp_path), relative)
    for tag, array in arrays.items():
        np.testing.assert_array_equal(other.array(tag), array)
    assert step_pack.list_packs(str(tmp_path)) == sorted([written.pack, relative])


@pytest.mark.parametrize(
    "relative", ["steps/../x.safetensors", "steps/1-abc.safetensors", "thumbnails/a.thumbs", ""]
)
def test_pack_names_from_a_record_cannot_leave_the_folder(tmp_path, relative):
    with pytest.raises(ValueError, match="not a Deephys step pack name"):
        step_pack.pack_path(str(tmp_path), relative)


def test_events_hold_no_array_and_every_step_is_read_from_its_pack(tmp_path):
    run = tmp_path / "run"
    _write_steps(run, range(2, 26, 2))
    packs = step_pack.list_packs(str(run))
    assert [step_pack.pack_step(p) for p in packs] == list(range(2, 26, 2))
    events = [n for n in os.listdir(run) if n.startswith("events.out.tfevents")]
    pack_bytes = sum(os.path.getsize(StepPack.open(str(run), p).path) for p in packs)
    event_bytes = sum(os.path.getsize(run / n) for n in events)
    assert event_bytes < pack_bytes / 3  # records, scalars and histograms only
    log = read_log(run)
    assert log.steps == tuple(range(2, 26, 2))
    assert log.missing(24) == ()
    assert log.activations(LAYER, "ood", step=2).shape == (20, 6)
    # Every step, also with the default sampling (10 records per tag): no notice.
    body = plugin_client(tmp_path).get(f"{PREFIX}/runs").json
    (entry,) = body["runs"]
    assert [s["step"] for s in entry["steps"]] == list(range(2, 26, 2))
    assert entry.get("sampling") is None
    points = plugin_client(tmp_path).get(
        f"{PREFIX}/scores_over_time?run=run&layer={LAYER}&dataset=ood"
    )
    assert [p["step"] for p in points.json["points"]] == list(range(2, 26, 2))


def _damage(kind: str, path: str, other: str) -> None:
    data = bytearray(Path(path).read_bytes())
    if kind == "truncated":
        data = data[: len(data) - 40]
    elif kind == "bit-flipped":
        data[-3] ^= 0x10
    elif kind == "header bit-flipped":
        data[20] ^= 0x01  # in the header's first key
    elif kind == "missing":
        os.remove(path)
        return
    elif kind == "replaced":
        data = bytearray(Path(other).read_bytes())
    Path(path).write_bytes(bytes(data))


# What each damage is called in the answer.
CAUSES = {
    "truncated": "truncated",
    "bit-flipped": "CRC-32C",
    "header bit-flipped": "damaged",
    "missing": "missing",
    "replaced": "another pack",
}


@pytest.mark.fault
@pytest.mark.parametrize("kind", list(CAUSES))
def test_a_pack_damaged_while_served_answers_404_naming_step_and_cause(tmp_path, kind):
    """The InD matrix (the largest array, last in the pack) is beyond the head that
    opening reads: damage there shows when it is read, damage to the head when the
    pack is opened. A server that opened the pack before keeps what it read."""
    run = tmp_path / "run"
    _write_steps(run, (2, 4), ind_images=3000, neurons=64)
    first, second = (StepPack.open(str(run), p).path for p in step_pack.list_packs(str(run)))
    served = plugin_client(tmp_path)
    neuron = f"{PREFIX}/neuron?run=run&layer={LAYER}&neuron=1&step={{}}"
    assert served.get(neuron.format(4)).status_code == 200
    _damage(kind, second, first)
    in_the_head = kind not in ("truncated", "bit-flipped")
    for client in (served, plugin_client(tmp_path)):  # already serving it, started after
        if in_the_head and client is not served:
            answer = client.get(neuron.format(4))
            assert answer.status_code == 404, answer.json
            assert "step 4" in answer.json["error"] and CAUSES[kind] in answer.json["error"]
        assert client.get(neuron.format(2)).status_code == 200  # the other step, as before
    with pytest.raises(KeyError) as raised:
        read_log(run).activations(LAYER, "ind", step=4)
    assert "step 4" in str(raised.value) and CAUSES[kind] in str(raised.value)
    np.testing.assert_array_equal(
        read_log(run).activations(LAYER, "ind", step=2),
        StepPack.open(str(run), step_pack.list_packs(str(run))[0]).array(
            tag_name(Kind.ACTIVATIONS, layer=LAYER, dataset="ind")
        ),
    )


def test_a_writer_killed_during_a_pack_leaves_no_step(tmp_path):
    run = tmp_path / "run"
    _write_steps(run, (2,))
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from tensorboard_plugin_deephys.log import step_pack
        from tensorboard_plugin_deephys.log.metadata import Record
        record = Record(step=4, epoch=1, layers=("fc",), datasets=("ind",),
                        class_names=("a",), num_images={{"ind": 1}}, top_k=1)
        big = np.ones((1 << 28,), np.uint8)
        real = step_pack.storage.write_with
        def slow(path, write):
            def writing(handle):
                handle.write(b"x" * 4096)
                handle.flush()
                print("writing", flush=True)
                import time; time.sleep(60)
            real(path, writing)
        step_pack.storage.write_with = slow
        step_pack.write_pack({str(run)!r}, record, {{"a": big}}, {{}})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    folder = run / "plugins" / "deephys" / "steps"
    assert any(name.endswith(".tmp") for name in os.listdir(folder))  # a temporary was there
    assert [step_pack.pack_step(p) for p in step_pack.list_packs(str(run))] == [2]
    assert read_log(run).steps == (2,)


def test_the_pack_of_a_record_whose_step_was_written_twice_is_the_later_one(tmp_path):
    run = tmp_path / "run"
    _write_steps(run, (2,), seed=0)
    time.sleep(0.01)
    _write_steps(run, (2,), seed=1)
    assert len(step_pack.list_packs(str(run))) == 2
    later = max(
        (StepPack.open(str(run), p) for p in step_pack.list_packs(str(run))),
        key=lambda pack: pack.written,
    )
    log = read_log(run)
    assert log.steps == (2,)
    np.testing.assert_array_equal(
        log.activations(LAYER, "ind", step=2),
        later.array(tag_name(Kind.ACTIVATIONS, layer=LAYER, dataset="ind")),
    )


def test_a_damaged_header_is_a_pack_error_naming_the_cause(tmp_path):
    written = step_pack.write_pack(
        str(tmp_path), _record(2), {"a": np.arange(3, dtype=np.int32)}, {}
    )
    path = step_pack.pack_path(str(tmp_path), written.pack)
    data = bytearray(Path(path).read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    Path(path).write_bytes(bytes(data))
    with pytest.raises(PackError, match="step 2.*header length"):
        StepPack.open(str(tmp_path), written.pack)


def test_a_steps_events_are_one_event_with_the_record_first(tmp_path):
    """The record, the scalars and the histograms of a step in one event: a process
    killed while writing it leaves all or none of them, so that a step written again
    after a resume never holds its scalars twice."""
    from tensorboard.compat.proto import event_pb2

    from deephys_lightning.event_files import RecordScanner

    run = tmp_path / "run"
    _write_steps(run, (2, 4, 6))
    (path,) = run.glob("events.out.tfevents.*")
    events = [event_pb2.Event.FromString(raw) for raw in RecordScanner(str(path), [])]
    with_values = [event for event in events if event.summary.value]
    assert [event.step for event in with_values] == [2, 4, 6]
    for event in with_values:
        tags = [value.tag for value in event.summary.value]
        assert tags[0] == tag_name(Kind.RECORD)
        assert "deephys/ind/accuracy" in tags and "deephys/fc/ood/novelty" in tags
        assert not any(tag.startswith("deephys.data/") for tag in tags[1:])
