"""The fault suite: damaged event files, tampered arrays, odd names, a full disk, a
restart without state.json and leftovers of interrupted writes, each met with the
real parts (Trainer runs, event files, a real tensorboard under both loaders, the
``deephys-lightning`` command). Every test marked ``fault`` is a case; the totals
(cases, survived, 5xx answers, crashes) are printed at the end of the session
(``tests/fault_tally.py``) and kept in docs/reliability.md."""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import fault_tally
import pytest
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log

pytestmark = pytest.mark.fault

VAL = {"ind": (12, 1), "ood": (8, 2)}


def _fit(tmp_path, val=VAL, **kwargs):
    kwargs.setdefault("max_epochs", 3)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], **kwargs)
    loaders = {name: loader(random_set(n, seed)) for name, (n, seed) in val.items()}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loaders)
    return t


def _events(run_dir) -> str:
    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    return path


def _framing(path) -> list[tuple[int, int, int, str]]:
    """(offset, end, step, tag) of every record of an intact event file."""
    from tensorboard.compat.proto import event_pb2

    data = Path(path).read_bytes()
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        tag = event.summary.value[0].tag if event.summary.value else ""
        records.append((offset, offset + 16 + length, event.step, tag))
        offset += 16 + length
    return records


def _find(records, step, tag):
    return next(r for r in records if r[2] == step and r[3] == tag)


# -- damaged event files ------------------------------------------------------------

RECORD_TAG = "deephys.data/record"
LABELS_TAG = "deephys.data/ood/labels"


def _cut(fraction):
    def damage(data, records):
        at = int(len(data) * fraction)
        return data[:at], at, len(data) - at

    return damage


def _flip(offset_of):
    def damage(data, records):
        at = offset_of(records)
        flipped = bytearray(data)
        flipped[at] ^= 0x5A
        return bytes(flipped), at, 1

    return damage


def _zeros(data, records):
    start = len(data) // 2
    return data[:start] + b"\0" * 4096 + data[start + 4096 :], start, 4096


# name -> damage(data, records) -> (damaged bytes, first damaged byte, bytes damaged)
EVENT_DAMAGE = {
    "cut at 25%": _cut(0.25),
    "cut at 50%": _cut(0.5),
    "cut at 90%": _cut(0.9),
    "cut 7 bytes short": lambda data, records: (data[:-7], len(data) - 7, 7),
    "flipped length of step 6's labels": _flip(lambda r: _find(r, 6, LABELS_TAG)[0] + 2),
    "flipped data of step 6's labels": _flip(lambda r: _find(r, 6, LABELS_TAG)[0] + 40),
    "flipped data of step 6's record": _flip(lambda r: _find(r, 6, RECORD_TAG)[0] + 60),
    "4 KiB of zeros mid-file": _zeros,
}


@pytest.fixture(scope="module")
def damaged_logs(tmp_path_factory):
    """A logdir with an intact run and one damaged copy of it per EVENT_DAMAGE case;
    for each copy, the first damaged byte and the records that lie wholly before it
    or (for flips) away from it."""
    base = tmp_path_factory.mktemp("damaged")
    t = _fit(base / "source")
    source = t.logger.log_dir
    records = _framing(_events(source))
    data = Path(_events(source)).read_bytes()
    logdir = base / "logs"
    shutil.copytree(source, logdir / "intact")
    cases = {}
    for index, (name, damage) in enumerate(EVENT_DAMAGE.items()):
        run = f"case{index}"
        shutil.copytree(source, logdir / run)
        damaged, first, span = damage(data, records)
        with open(_events(logdir / run), "wb") as handle:
            handle.write(damaged)
        hit = [r for r in records if r[0] < first + span and r[1] > first]
        cases[name] = (run, first, hit)
    return logdir, cases


@pytest.mark.parametrize("case", list(EVENT_DAMAGE))
def test_read_log_keeps_every_intact_record_and_says_where_the_damage_is(damaged_logs, case):
    logdir, cases = damaged_logs
    run, first, hit = cases[case]
    lost_records = {r[2] for r in hit if r[3] == RECORD_TAG}
    path = _events(logdir / run)
    if lost_records == {3, 6, 9}:  # nothing left to read: the error says why
        with pytest.warns(UserWarning), pytest.raises(ValueError, match="damaged event files"):
            read_log(logdir, run=run)
        return
    with pytest.warns(UserWarning, match="damaged event file") as seen:
        log = read_log(logdir, run=run)
    assert log.damage and all(d.path == path for d in log.damage)
    assert any(path in str(w.message) for w in seen)
    assert min(d.offset for d in log.damage) <= first
    assert set(log.steps) == {3, 6, 9} - lost_records
    for step in log.steps:  # a record whose arrays were lost says which
        lost = {r[3] for r in hit if r[2] == step and r[3].startswith("deephys.data/")}
        assert set(log.missing(step)) == lost - {RECORD_TAG}
        if not lost:
            assert log.labels("ood", step).shape == (8,)


def test_the_scores_command_reports_damage_and_keeps_the_rest(damaged_logs):
    logdir, cases = damaged_logs
    done = subprocess.run(
        [sys.executable, "-m", "deephys_lightning", "scores", str(logdir), "--csv"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for run, _, _ in cases.values():
        assert f"{os.sep}{run}{os.sep}events.out" in done.stderr  # named, with the offset
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert sorted(int(r[1]) for r in rows if r[0] == "intact") == [3, 6, 9]


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_tensorboard_serves_damaged_runs_without_5xx_or_crash(damaged_logs, load_fast):
    logdir, _ = damaged_logs
    with running_tensorboard(logdir, load_fast=load_fast) as base:
        listing = _wait_for_run(base, "intact")
        runs = {r["run"]: r for r in listing["runs"]}
        assert [s["step"] for s in runs["intact"]["steps"]] == [3, 6, 9]
        for run in runs.values():
            _probe_every_route(base, run)
        for gone in listing["unavailable"]:
            response = fault_tally.get(f"{base}/data/plugin/deephys/summary", run=gone["run"])
            assert response is not None and 400 <= response.status_code < 500
        assert fault_tally.get(f"{base}/data/plugin/deephys/runs") is not None  # alive


def _wait_for_run(base, name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        response = fault_tally.get(f"{base}/data/plugin/deephys/runs")
        assert response is not None and response.status_code == 200
        if any(r["run"] == name for r in response.json()["runs"]):
            time.sleep(2.5)  # past the plugin's listing cache: every run loaded
            return fault_tally.get(f"{base}/data/plugin/deephys/runs").json()
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)


def _probe_every_route(base, run) -> dict[str, int]:
    """Every route at every step of ``run``: 200, or 4xx JSON with words, never 5xx."""
    layer, ind = run["layers"][0], run["ind"]
    requests_made = []
    for entry in run["steps"]:
        where = {"run": run["run"], "layer": layer, "step": entry["step"]}
        requests_made += [
            ("summary", where),
            ("neuron", {**where, "neuron": 0}),
            ("image", {**where, "dataset": ind, "index": 0}),
            ("category", {**where, "dataset": ind, "label": 0}),
            ("thumbnail", {**where, "dataset": ind, "index": 0}),
        ]
    for ood in run["datasets"][1:]:
        requests_made.append(
            ("scores_over_time", {"run": run["run"], "layer": layer, "dataset": ood})
        )
    statuses = {}
    for route, params in requests_made:
        response = fault_tally.get(f"{base}/data/plugin/deephys/{route}", **params)
        assert response is not None, f"the server died on {route} {params}"
        assert response.status_code < 500, (route, params, response.text[:300])
        if response.status_code >= 400:
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.json()["error"]
        statuses[route] = response.status_code
    return statuses
