"""Reads with deadlines: a read that never returns answers 504 JSON (or the command
line's one-line error) and frees its thread; a pipe where a file belongs is refused at
once."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from plugin_client import plugin_client
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, cli, read_log
from tensorboard_plugin_deephys.log import storage

THUMBNAIL = "/data/plugin/deephys/thumbnail?run=run&dataset=ind&index={}"


@pytest.fixture()
def logdir(tmp_path):
    t = trainer(tmp_path / "fit", [DeephysCallback(layer="fc")], max_epochs=1)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(8, 2))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    shutil.copytree(t.logger.log_dir, tmp_path / "logs" / "run")
    return tmp_path / "logs"


def _pack(logdir, dataset: str) -> str:
    folder = logdir / "run" / "plugins" / "deephys" / "thumbnails"
    (name,) = [n for n in os.listdir(folder) if n.startswith(f"{dataset}-")]
    return str(folder / name)


def test_a_read_past_its_deadline_raises_and_frees_the_caller(monkeypatch):
    monkeypatch.setenv("DEEPHYS_READ_TIMEOUT_S", "0.2")
    release = threading.Event()
    start = time.monotonic()
    with pytest.raises(storage.ReadTimeout, match="did not end within 0.2 s"):
        storage._with_deadline("somewhere", lambda: release.wait(30))
    assert time.monotonic() - start < 5
    release.set()
    assert not issubclass(storage.ReadTimeout, OSError)  # never taken for a missing file


@pytest.mark.fault
def test_a_pipe_where_a_thumbnail_pack_belongs_is_refused_at_once(logdir):
    """A FIFO blocked every request forever and leaked a server thread per request."""
    pack = _pack(logdir, "ind")
    client = plugin_client(logdir)
    assert client.get(THUMBNAIL.format(0)).status_code == 200
    os.remove(pack)
    os.mkfifo(pack)
    threads = threading.active_count()
    start = time.monotonic()
    for index in range(8):
        answer = client.get(THUMBNAIL.format(index))
        assert answer.status_code == 404, answer.data[:200]
        assert "not a regular file" in answer.json["error"]
    assert time.monotonic() - start < 10
    assert threading.active_count() <= threads + 1  # no thread left per request


@pytest.mark.fault
def test_a_stalled_read_answers_504_and_the_command_line_one_line(logdir, monkeypatch, capsys):
    """A read that never returns (a stalled network mount), simulated by a ranged read
    that waits: the route answers 504 JSON within the deadline, the next request is
    served, export says so in one line."""
    client = plugin_client(logdir)
    assert client.get(THUMBNAIL.format(1)).status_code == 200
    monkeypatch.setenv("DEEPHYS_READ_TIMEOUT_S", "0.5")
    stall = threading.Event()
    real = os.pread

    def stalled(fd, length, offset):
        stall.wait(60)
        return real(fd, length, offset)

    monkeypatch.setattr(os, "pread", stalled)
    start = time.monotonic()
    answer = client.get(THUMBNAIL.format(2))
    assert answer.status_code == 504 and "did not end within 0.5 s" in answer.json["error"]
    assert time.monotonic() - start < 10
    code = cli.main(["export", str(logdir / "run"), str(logdir.parent / "exported")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("deephys-lightning export: reading ") and len(lines) <= 2
    stall.set()  # the stalled reads end; the thumbnails are served again
    monkeypatch.setattr(os, "pread", real)
    assert client.get(THUMBNAIL.format(2)).status_code == 200
    assert read_log(logdir / "run").thumbnails("ind").shape[0] == 12
