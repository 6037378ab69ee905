"""Messages that name the real cause (issue 31, item 9): damage met by ``read_log``,
``deephys-lightning scores`` and ``export`` is said as what it is (the file, the
step, the array, the access error), in one line, never as advice to record
differently; and a symbolic link loop lists each run once. Each case on both log
layouts where it exists in both: step packs (since 0.3) and every array in the
events (``to_events_layout``)."""

from __future__ import annotations

import glob
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from cli_run import deephys_command
from event_surgery import rewrite_events, tamper, to_events_layout
from s3_server import new_bucket, running_s3_server
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log, read_runs
from deephys_lightning.cli import main as cli_main
from deephys_lightning.reader import LogDamageWarning, UnreadableDataError
from tensorboard_plugin_deephys.log import step_pack, storage
from tensorboard_plugin_deephys.log.metadata import Kind, tag_name

pytestmark = pytest.mark.fault

IND_THUMBNAILS = tag_name(Kind.THUMBNAILS, dataset="ind")
OOD_LABELS = tag_name(Kind.LABELS, dataset="ood")
IND_TOP_INDICES = tag_name(Kind.TOP_INDICES, layer="fc", dataset="ind")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A run recorded at steps 3, 6 and 9 (step packs); thumbnails written at step 3."""
    base = tmp_path_factory.mktemp("fitted")
    t = trainer(base, [DeephysCallback(layer="fc")], max_epochs=3)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(8, 2))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    return t.logger.log_dir


def _copy(fitted, tmp_path, layout: str) -> Path:
    run = tmp_path / "logs" / "run"
    if layout == "events":
        to_events_layout(fitted, run)
    else:
        shutil.copytree(fitted, run)
    return run


def _events(run) -> str:
    (path,) = glob.glob(os.path.join(run, "events.out.tfevents.*.deephys"))
    return path


def _flip_data_of(path, step: int, tag: str) -> None:
    """Flip a byte in the data of the event record of ``tag`` at ``step``: that record
    fails its CRC and is skipped by the checked reader."""
    from tensorboard.compat.proto import event_pb2

    data = bytearray(Path(path).read_bytes())
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(bytes(data[offset + 12 : offset + 12 + length]))
        if event.step == step and any(value.tag == tag for value in event.summary.value):
            data[offset + 12 + length // 2] ^= 0x5A
            Path(path).write_bytes(bytes(data))
            return
        offset += 16 + length
    raise AssertionError(f"no event of {tag} at step {step} in {path}")


def _pack(run, step: int) -> step_pack.StepPack:
    (relative,) = [p for p in step_pack.list_packs(str(run)) if step_pack.pack_step(p) == step]
    return step_pack.StepPack.open(str(run), relative)


def _flip_in_pack(run, step: int, tag: str | None) -> None:
    """Flip a byte of ``tag``'s bytes in the pack of ``step`` (None: in its header)."""
    pack = _pack(run, step)
    at = 20 if tag is None else pack._entries[tag].begin
    data = bytearray(Path(pack.path).read_bytes())
    data[at] ^= 0x10
    Path(pack.path).write_bytes(bytes(data))


def _rewrite_pack(run, step: int, tag: str, alter, monkeypatch) -> None:
    """The pack of ``step`` written again, under its own name, with ``tag`` altered and
    valid CRCs: what a foreign writer (not damage) leaves."""
    pack = _pack(run, step)
    arrays = {name: np.array(pack.array(name)) for name in pack.names}
    arrays[tag] = alter(arrays[tag])
    with monkeypatch.context() as patch:
        patch.setattr(step_pack, "pack_name", lambda _: pack.relative)
        step_pack.write_pack(str(run), pack.record, arrays, pack.documents)


def _export(run, tmp_path, capsys, *args) -> tuple[int, str]:
    code = cli_main(["export", str(run), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert all(line.startswith("deephys-lightning ") for line in lines), err
    return lines[-1]


# -- a thumbnail reference lost to damage -------------------------------------------------


def test_a_thumbnail_reference_lost_to_a_damaged_event_file_is_said_so(fitted, tmp_path, capsys):
    """Events layout: the thumbnails are referenced once, in step 3's events; a flipped
    byte there loses the reference of every later step. Not "record with thumbnails"."""
    run = _copy(fitted, tmp_path, "events")
    _flip_data_of(_events(run), 3, IND_THUMBNAILS)
    with pytest.warns(LogDamageWarning, match="damaged event file"):
        log = read_log(run)
    assert log.steps == (3, 6, 9)
    for step in log.steps:
        with pytest.raises(KeyError) as raised:
            log.thumbnails("ind", step)
        said = raised.value.args[0]
        assert f"'ind' at step {step} were written at step 3" in said
        assert "thumbnail reference written with them was lost to damage" in said
        assert _events(run) in said and "thumbnails=True" not in said
    assert log.thumbnails("ood", 6).shape == (8, 8, 8, 3)  # its reference is intact
    code, err = _export(run, tmp_path, capsys, "--step", "6")
    last = _last_line(err)
    assert code == 2 and last.startswith("deephys-lightning export: dataset 'ind': ")
    assert "lost to damage of the event file" in last and _events(run) in last
    assert "thumbnails=True" not in err


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_the_pack_that_names_the_thumbnails_is_named_when_it_is_lost(
    fitted, tmp_path, capsys, damage
):
    """Pack layout: step 3's pack holds the reference that steps 6 and 9 use."""
    run = _copy(fitted, tmp_path, "packs")
    pack = _pack(run, 3)
    if damage == "missing":
        os.remove(pack.path)
    else:
        _flip_in_pack(run, 3, None)
    log = read_log(run)
    with pytest.raises(KeyError) as raised:
        log.thumbnails("ind", 6)
    said = raised.value.args[0]
    assert "'ind' at step 6 were written at step 3" in said
    assert pack.relative in said and damage in said and "thumbnails=True" not in said
    code, err = _export(run, tmp_path, capsys, "--step", "6")
    assert code == 2 and pack.relative in _last_line(err) and damage in _last_line(err)
    assert "thumbnails=True" not in err


# -- damaged arrays: export says which, for which dataset and step --------------------------


def _damaged_at_6(fitted, tmp_path, monkeypatch, layout: str, how: str, tag: str, alter):
    """A copy of the fitted run whose array ``tag`` at step 6 is damaged: ``alter``-ed in
    the events layout or in a rewritten pack (valid CRCs), or one byte flipped in it."""
    if layout == "events":
        run = tmp_path / "logs" / "run"
        rewrite_events(fitted, run, tamper(tag, 6, alter))
        return run
    run = _copy(fitted, tmp_path, layout)
    if how == "flipped":
        _flip_in_pack(run, 6, tag)
    else:
        _rewrite_pack(run, 6, tag, alter, monkeypatch)
    return run


LABEL_DAMAGE = {  # layout, how -> the cause export names
    ("events", "tampered"): "values must lie in [0, 3); found 99",
    ("packs", "rewritten"): "values must lie in [0, 3); found 99",
    ("packs", "flipped"): f"the bytes of {OOD_LABELS} fail their CRC-32C",
}


@pytest.mark.parametrize(("layout", "how"), list(LABEL_DAMAGE))
def test_damaged_labels_make_export_say_so_in_one_line(
    fitted, tmp_path, capsys, monkeypatch, layout, how
):
    run = _damaged_at_6(
        fitted, tmp_path, monkeypatch, layout, how, OOD_LABELS, lambda a: a * 0 + 99
    )
    code, err = _export(run, tmp_path, capsys, "--step", "6")
    last = _last_line(err)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert last.startswith("deephys-lightning export: dataset 'ood': ")
    assert "step 6" in last and LABEL_DAMAGE[layout, how] in last
    assert "Not found" not in last  # TensorBoard's prefix is not ours to show
    with pytest.raises(KeyError, match="labels .*'ood'.*step 6|step 6.*labels"):
        read_log(run).labels("ood", 6)
    assert read_log(run).labels("ood", 9).shape == (8,)  # the other steps are intact
    assert _export(run, tmp_path, capsys, "--step", "9")[0] == 0


TOP_INDEX_DAMAGE = {
    ("events", "tampered"): "top_indices of layer 'fc' dataset 'ind' at step 6",
    ("packs", "rewritten"): "top_indices of layer 'fc' dataset 'ind' at step 6",
    ("packs", "flipped"): f"the bytes of {IND_TOP_INDICES} fail their CRC-32C",
}


@pytest.mark.parametrize(("layout", "how"), list(TOP_INDEX_DAMAGE))
def test_damaged_top_image_indices_are_named_not_taken_for_a_missing_matrix(
    fitted, tmp_path, capsys, monkeypatch, layout, how
):
    """In the events layout the layer's width comes from the InD top images: damaged,
    the matrix cannot be read, and export says that, not "holds no full activation
    matrix". A step pack's header gives the width: export, which needs no top images,
    goes on, and the views that need them name the damage."""
    run = _damaged_at_6(
        fitted, tmp_path, monkeypatch, layout, how, IND_TOP_INDICES, lambda a: a + 1000
    )
    code, err = _export(run, tmp_path, capsys, "--step", "6")
    if layout != "events":
        assert code == 0, err
        np.testing.assert_array_equal(
            read_log(run).activations("fc", "ind", 6), read_log(fitted).activations("fc", "ind", 6)
        )
        with pytest.raises(KeyError) as raised:
            read_log(run).top_images("fc", "ind", step=6)
        assert TOP_INDEX_DAMAGE[layout, how] in raised.value.args[0]
        return
    last = _last_line(err)
    assert code == 2 and "holds no full activation matrix" not in err
    assert last.startswith("deephys-lightning export: layer 'fc', dataset 'ind': ")
    assert TOP_INDEX_DAMAGE[layout, how] in last
    assert "max_activation_bytes" not in last  # it was recorded: no advice to record it
    with pytest.raises(KeyError) as raised:
        read_log(run).activations("fc", "ind", 6)
    assert "max_activation_bytes" not in raised.value.args[0]
    if how != "flipped":  # an array that does not fit its record: the subclass says so
        assert raised.type is UnreadableDataError


# -- event files that cannot be read: scores says so, not "needs an OOD set" ----------------


def _spoil_events(run, how: str) -> None:
    path = _events(run)
    if how == "zeroed":
        Path(path).write_bytes(b"\0" * os.path.getsize(path))
    else:  # a FIFO where the file was: refused at once, without a read
        os.remove(path)
        os.mkfifo(path)


@pytest.mark.parametrize("layout", ["events", "packs"])
@pytest.mark.parametrize("how", ["zeroed", "not a regular file"])
def test_scores_says_an_unreadable_event_file_is_the_cause(fitted, tmp_path, layout, how):
    run = _copy(fitted, tmp_path, layout)
    _spoil_events(run, how)
    done = deephys_command("scores", str(run.parent))
    last = _last_line(done.stderr)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "OOD set" not in done.stderr and "Unable to reload" not in done.stderr
    assert "no Deephys scores could be read" in last and "damaged or unreadable" in last
    assert _events(run) in last
    assert ("not a regular file" if how != "zeroed" else "CRC mismatch") in last
    with pytest.warns(LogDamageWarning), pytest.raises(ValueError) as raised:
        read_log(run.parent)
    assert "none readable" in str(raised.value) and _events(run) in str(raised.value)
    # beside a healthy run, the healthy one is scored and the other named
    shutil.copytree(fitted, run.parent / "healthy")
    done = deephys_command("scores", str(run.parent), "--csv")
    assert done.returncode == 0 and _events(run) in done.stderr
    assert sorted(line.split(",")[0] for line in done.stdout.splitlines()[1:]) == ["healthy"] * 3


# -- stores: a missing backend, denied access -------------------------------------------------


def test_a_url_whose_backend_is_missing_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as where it is not installed
    for args in (["scores", "gs://bucket/logs"], ["export", "gs://bucket/logs", str(tmp_path)]):
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "no fsspec backend for gs://" in err and "pip install gcsfs" in err


@pytest.fixture(scope="module")
def s3_logs(fitted):
    """A moto S3 server holding the run under s3://BUCKET/logs/run."""
    with running_s3_server() as endpoint:
        bucket = new_bucket()
        storage.filesystem("s3://x")[0].put(str(fitted), f"{bucket}/logs/run", recursive=True)
        yield endpoint, f"s3://{bucket}/logs"


def test_denied_s3_credentials_are_one_line_naming_the_store(s3_logs, tmp_path):
    endpoint, logs = s3_logs
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)  # checked now
    try:
        scores, export = (
            deephys_command("scores", logs),
            deephys_command("export", f"{logs}/run", str(tmp_path)),
        )
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    for done in (scores, export):
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert f"cannot read {logs}" in line and "access denied" in line
        assert "PermissionError" in line and "credentials" in line
    assert deephys_command("scores", logs).returncode == 0  # the same store, readable again


def test_an_s3_error_of_tensorboards_own_reader_is_one_line(s3_logs, tmp_path):
    """TensorBoard lists s3:// runs with boto3 (S3_ENDPOINT): its botocore errors
    are said in one line too (here its endpoint holds no such bucket)."""
    endpoint, logs = s3_logs
    with running_s3_server() as other:
        env = {"AWS_ENDPOINT_URL": endpoint, "S3_ENDPOINT": other}
        for done in (
            deephys_command("scores", logs, env=env),
            deephys_command("export", f"{logs}/run", "x", env=env),
        ):
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert f"cannot read {logs}" in line and "NoSuchBucket" in line


# -- a symbolic link loop -------------------------------------------------------------------


def test_a_run_reached_again_through_links_is_listed_once(fitted, tmp_path, capsys):
    logs = tmp_path / "logs"
    shutil.copytree(fitted, logs / "run")
    (logs / "run" / "up").symlink_to("..")  # a loop: run/up/run/up/...
    (logs / "run" / "self").symlink_to(logs / "run")
    (logs / "alias").symlink_to("run")  # a second name, shallower than the loop's
    shutil.copytree(fitted, tmp_path / "elsewhere" / "other")
    (logs / "linked").symlink_to(tmp_path / "elsewhere" / "other")  # only through a link
    assert sorted(read_runs(logs)) == ["linked", "run"]
    assert cli_main(["scores", str(logs), "--csv"]) == 0
    rows = [line.split(",")[:2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [[run, step] for run in ("linked", "run") for step in ("3", "6", "9")]
    assert read_log(logs / "run").steps == (3, 6, 9)
