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
import time
from pathlib import Path

import fault_tally
import numpy as np
import pytest
from cli_run import deephys_command
from event_surgery import drop_value, rewrite_events, tamper, to_events_layout
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from plugin_client import plugin_client
from tensorboard_process import running_tensorboard
from tiny_model import CountingNet, TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.event_files import RecordScanner

pytestmark = pytest.mark.fault

VAL = {"ind": (12, 1), "ood": (8, 2)}


def _fit(tmp_path, val=VAL, **kwargs):
    kwargs.setdefault("max_epochs", 3)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], **kwargs)
    loaders = {name: loader(random_set(n, seed)) for name, (n, seed) in val.items()}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loaders)
    return t


def _events(run_dir) -> str:
    """The callback's own event file of ``run_dir`` (the logger keeps one of its own)."""
    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*.deephys"))
    return path


def _framing(path) -> list[tuple[int, int, int, tuple[str, ...]]]:
    """(offset, end, step, tags) of every record of an intact event file (an event
    holds several values: the writer merges a record's small ones)."""
    from tensorboard.compat.proto import event_pb2

    data = Path(path).read_bytes()
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        tags = tuple(value.tag for value in event.summary.value)
        records.append((offset, offset + 16 + length, event.step, tags))
        offset += 16 + length
    return records


def _find(records, step, tag):
    return next(r for r in records if r[2] == step and tag in r[3])


# -- damaged event files ------------------------------------------------------------

RECORD_TAG = "deephys.data/record"
LABELS_TAG = "deephys.data/ood/labels"


def _first_record(records) -> int:
    return min(r[0] for r in records if RECORD_TAG in r[3])


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
    "cut inside the first record": lambda data, records: (
        data[: _first_record(records) + 20],
        _first_record(records) + 20,
        len(data) - _first_record(records) - 20,
    ),
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
    t = _fit(base / "fit")
    source = base / "source"  # the events layout: every array in the events (before 0.3)
    to_events_layout(t.logger.log_dir, source)
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
    lost_records = {r[2] for r in hit if RECORD_TAG in r[3]}
    path = _events(logdir / run)
    if lost_records == {3, 6, 9}:  # nothing left to read: the error says why
        with pytest.warns(UserWarning), pytest.raises(ValueError, match="damaged event files"):
            read_log(logdir, run=run)
        return
    with pytest.warns(UserWarning, match="damaged event file|event file ends early") as seen:
        log = read_log(logdir, run=run)
    assert log.damage and all(d.path == path for d in log.damage)
    assert any(path in str(w.message) for w in seen)
    assert min(d.offset for d in log.damage) <= first
    assert set(log.steps) == {3, 6, 9} - lost_records
    for step in log.steps:  # a record whose arrays were lost says which
        lost = {t for r in hit if r[2] == step for t in r[3] if t.startswith("deephys.data/")}
        assert set(log.missing(step)) == lost - {RECORD_TAG}
        if not lost:
            assert log.labels("ood", step).shape == (8,)


def test_the_scores_command_reports_damage_and_keeps_the_rest(damaged_logs):
    logdir, cases = damaged_logs
    done = deephys_command("scores", str(logdir), "--csv")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for run, _, _ in cases.values():
        assert f"{os.sep}{run}{os.sep}events.out" in done.stderr  # named, with the offset
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert sorted(int(r[1]) for r in rows if r[0] == "intact") == [3, 6, 9]


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_tensorboard_serves_damaged_runs_without_5xx_or_crash(damaged_logs, load_fast):
    logdir, cases = damaged_logs
    with running_tensorboard(logdir, load_fast=load_fast) as base:
        listing = _wait_for_run(base, "intact")
        runs = {r["run"]: r for r in listing["runs"]}
        assert [s["step"] for s in runs["intact"]["steps"]] == [3, 6, 9]
        for run in runs.values():
            _probe_every_route(base, run)
        # the run cut inside its first record is named, with its cause
        assert any(
            u["run"] == cases["cut inside the first record"][0] for u in listing["unavailable"]
        )
        for gone in listing["unavailable"]:
            url = f"{base}/data/plugin/deephys/summary"
            response = fault_tally.get(url, run=gone["run"], layer="fc")
            assert response is not None and response.status_code == 404, response.text
            assert response.json()["error"]
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


# -- arrays that do not fit their record ------------------------------------------------


TAMPERED = {
    "top images beyond the set": ("fc/ood/top_indices", lambda a: a + 1000, "must lie in"),
    "a negative label": ("ood/labels", lambda a: np.r_[-3, a[1:]].astype(a.dtype), "lie in"),
    "a label beyond the classes": ("ood/labels", lambda a: a * 0 + 99, "must lie in"),
    "labels one short": ("ood/labels", lambda a: a[:-1], "the record says N = 8"),
    "neurons beyond the layer": ("fc/ood/image_top_neurons", lambda a: a + 10**6, "must lie"),
    "top values of another shape": ("fc/ood/top_values", lambda a: a[:, :1], "shape"),
    "category means of a class short": ("fc/ood/category_means", lambda a: a[:-1], "axis 0"),
    "float labels": ("ood/labels", lambda a: a.astype(np.float32) + 0.5, "integer"),
}


READS = {  # read_log's way to each kind
    "top_indices": lambda log, step: log.top_images("fc", "ood", step),
    "top_values": lambda log, step: log.top_images("fc", "ood", step),
    "labels": lambda log, step: log.labels("ood", step),
    "image_top_neurons": lambda log, step: log.image_top_neurons("fc", "ood", step),
    "category_means": lambda log, step: log.category_means("fc", "ood", step),
}


@pytest.fixture(scope="module")
def tampered_logs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tampered")
    source = _fit(base / "source").logger.log_dir
    logdir = base / "logs"
    for index, (tag, alter, _) in enumerate(TAMPERED.values()):
        rewrite_events(source, logdir / f"case{index}", tamper(f"deephys.data/{tag}", 6, alter))
    return logdir


@pytest.mark.parametrize("case", list(TAMPERED))
def test_an_array_that_does_not_fit_its_record_is_refused_for_its_step_only(tampered_logs, case):
    run = f"case{list(TAMPERED).index(case)}"
    tag, _, words = TAMPERED[case]
    log = read_log(tampered_logs, run=run)
    assert log.steps == (3, 6, 9) and log.missing(6) == ()
    kind = tag.rsplit("/", 1)[1]
    with pytest.raises(KeyError, match=f"the {kind} of .*'ood' at step 6 .* damaged: .*{words}"):
        READS[kind](log, 6)
    READS[kind](log, 9)  # the other steps are intact
    np.testing.assert_array_equal(
        log.labels("ood", 9), read_log(tampered_logs, "case0").labels("ood", 9)
    )
    client = plugin_client(tampered_logs)
    where = {"run": run, "layer": "fc"}
    refused = []
    for route, params in (
        ("summary", {}),
        ("neuron", {"neuron": 0}),
        ("image", {"dataset": "ood", "index": 0}),
        ("category", {"dataset": "ood", "label": 1}),
    ):
        damaged = client.get(
            f"/data/plugin/deephys/{route}", query_string={**where, **params, "step": 6}
        )
        fine = client.get(
            f"/data/plugin/deephys/{route}", query_string={**where, **params, "step": 9}
        )
        assert fine.status_code == 200, fine.json
        if damaged.status_code != 200:  # the route needed the damaged array: it says so
            assert damaged.status_code == 404 and "damaged" in damaged.json["error"]
            refused.append(route)
        fault_tally.TOTALS["5xx"] += damaged.status_code >= 500
    assert refused  # some view needs every array


def test_a_record_whose_arrays_a_loader_dropped_says_which(tmp_path):
    source = _fit(tmp_path / "source").logger.log_dir
    dropped = {"deephys.data/ood/labels", "deephys.data/fc/ood/top_indices"}

    def drop(event):
        for tag in dropped:
            event = event and drop_value(tag, 9)(event)
        return event

    rewrite_events(source, tmp_path / "logs" / "run", drop)
    log = read_log(tmp_path / "logs" / "run")
    assert set(log.missing(9)) == dropped and log.missing(6) == ()
    client = plugin_client(tmp_path / "logs")
    (run,) = client.get("/data/plugin/deephys/runs").json["runs"]
    assert [set(s["missing"]) for s in run["steps"]] == [set(), set(), dropped]
    image = {"run": "run", "layer": "fc", "dataset": "ind", "index": 0}
    assert client.get("/data/plugin/deephys/image", query_string=image).status_code == 200
    neuron = client.get("/data/plugin/deephys/neuron", query_string={"run": "run", "layer": "fc"})
    assert neuron.status_code == 404 and "sampled it out" in neuron.json["error"]


# -- names ----------------------------------------------------------------------------

ODD_NAMES = [
    "cifar10..2",
    "imagenet...",
    'quote"d',
    "<img src=x onerror=alert(1)>",
    "名前 1",
    "x/y",
    "  spaced  ",
    "%2e%2e",
    "back\\slash",
]


def test_any_dataset_name_is_recorded_shown_and_exported(tmp_path):
    from deephys_lightning.export import export_step

    val = {name: (6, seed) for seed, name in enumerate(ODD_NAMES, start=1)}
    t = _fit(tmp_path, val=val, max_epochs=1)
    log = read_log(t.logger.log_dir)
    assert log.datasets == tuple(ODD_NAMES)
    client = plugin_client(tmp_path)
    run = os.path.relpath(t.logger.log_dir, tmp_path)
    for name in ODD_NAMES:
        assert log.thumbnails(name).shape == (6, 8, 8, 3)
        where = {"run": run, "layer": "fc", "dataset": name}
        for route, params in (
            ("image", {"index": 5}),
            ("category", {"label": int(log.labels(name)[0])}),
            ("thumbnail", {"index": 5}),
        ):
            response = client.get(f"/data/plugin/deephys/{route}", query_string={**where, **params})
            assert response.status_code == 200, (name, route, response.data[:200])
        if name != ODD_NAMES[0]:
            over = client.get("/data/plugin/deephys/scores_over_time", query_string=where)
            assert over.status_code == 200 and over.json["dataset"] == name
    files = export_step(t.logger.log_dir, tmp_path / "export")
    assert sorted(files.tests) == sorted(ODD_NAMES)
    assert all(path.is_file() for path in files.tests.values())


# -- the callback's own I/O -------------------------------------------------------------


def test_a_full_disk_does_not_end_training(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tiny", version=0)
    assets_dir = os.path.join(logger.log_dir, "plugins", "deephys")
    os.makedirs(assets_dir)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", assets_dir],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        model = CountingNet()
        t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger, max_epochs=2)
        val = {"ind": loader(random_set(40, 1)), "ood": loader(random_set(40, 2))}
        with pytest.warns(UserWarning, match="No space left on device.* Training goes on") as seen:
            t.fit(model, loader(random_set(12, 0)), val_dataloaders=val)
        assert model.trained == 6  # both epochs trained
        assert sum("could not be written" in str(w.message) for w in seen) == 1
        leftovers = [n for _, _, names in os.walk(assets_dir) for n in names if n.endswith(".tmp")]
        assert leftovers == []  # a failed write removes its temporary file
    finally:
        subprocess.run(["umount", assets_dir], check=True)


@pytest.mark.parametrize("state", ["deleted", "garbage"])
def test_a_restart_without_its_state_file_never_rewrites_a_step(tmp_path, state):
    from deephys_lightning.event_files import recorded_steps

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    val = {"ind": loader(random_set(5, 1)), "ood": loader(random_set(5, 2))}
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    first = trainer(
        tmp_path,
        [DeephysCallback(layer="fc"), checkpoints],
        logger=logger,
        max_epochs=3,
        enable_checkpointing=True,
    )
    first.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    run_dir = first.logger.log_dir
    state_file = os.path.join(run_dir, "plugins", "deephys", "state.json")
    if state == "deleted":
        os.remove(state_file)
    else:
        Path(state_file).write_text("{not json")
    assert recorded_steps(run_dir) == {3: "fit", 6: "fit", 9: "fit"}
    oldest = sorted((tmp_path / "ckpt").glob("epoch=0*.ckpt"))[0]
    resumed = trainer(
        tmp_path,
        [DeephysCallback(layer="fc"), ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
        logger=TensorBoardLogger(tmp_path, name="run", version=0),
        max_epochs=4,
        enable_checkpointing=True,
    )
    with pytest.warns(UserWarning, match="already holds this fit's record at step 9"):
        resumed.fit(
            TinyNet(), loader(random_set(12, 0)), val_dataloaders=val, ckpt_path=str(oldest)
        )
    assert read_log(run_dir).steps == (3, 6, 9, 12)
    records = [
        raw
        for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
        for raw in RecordScanner(path, [], only_with=RECORD_TAG.encode())
    ]
    assert len(records) == 4  # each step's record once: none written again


def test_leftovers_of_interrupted_writes_are_removed_by_the_next_run(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tiny", version=0)
    folder = Path(logger.log_dir, "plugins", "deephys", "thumbnails")
    folder.mkdir(parents=True)
    old, young = folder / "ind-abc.npy.4242.tmp", folder / "ind-def.npy.4243.tmp"
    old.write_bytes(b"half a file")
    young.write_bytes(b"a write under way elsewhere")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger, max_epochs=1)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders={"ind": loader(random_set(6, 1))})
    assert not old.exists() and young.exists()
    assert read_log(logger.log_dir).steps == (3,)


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_a_thumbnail_file_truncated_under_a_real_tensorboard(tmp_path, load_fast):
    t = _fit(tmp_path, max_epochs=1)
    folder = Path(t.logger.log_dir, "plugins", "deephys", "thumbnails")
    (path,) = folder.glob("ind-*.thumbs")
    with running_tensorboard(tmp_path, load_fast=load_fast) as base:
        run = _wait_for_run(base, "tiny/version_0")["runs"][0]["run"]
        url = f"{base}/data/plugin/deephys/thumbnail"
        first = fault_tally.get(url, run=run, dataset="ind", index=11)
        assert first.status_code == 200
        assert first.headers["Content-Type"] in ("image/png", "image/jpeg")
        with open(path, "r+b") as handle:  # cp over it, rsync --inplace
            handle.truncate(path.stat().st_size // 2)
        for index in (0, 11):
            response = fault_tally.get(url, run=run, dataset="ind", index=index)
            assert response is not None, "tensorboard died"
            assert response.status_code == 404 and "damaged" in response.json()["error"]
        statuses = _probe_every_route(base, {**run_info(base, run)})
        assert statuses["summary"] == 200 and statuses["thumbnail"] == 404


def run_info(base, run):
    listing = fault_tally.get(f"{base}/data/plugin/deephys/runs").json()
    return next(r for r in listing["runs"] if r["run"] == run)


def test_a_state_file_that_cannot_be_saved_loses_nothing(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tiny", version=0)
    Path(logger.log_dir, "plugins", "deephys", "state.json").mkdir(parents=True)  # unwritable
    with pytest.warns(UserWarning, match="is written, but .*state.json could not be saved") as seen:
        _fit(tmp_path, logger=logger, max_epochs=2)
    assert sum("could not be saved" in str(w.message) for w in seen) == 1
    assert not any("could not be written" in str(w.message) for w in seen)
    assert read_log(logger.log_dir).steps == (3, 6)


def test_a_tensor_whose_shape_does_not_fit_its_bytes_spoils_only_its_tag(tmp_path):
    """A damaged shape field (which TensorBoard's Rust loader may serve): the provider
    cannot convert that tag at any step; its views say so, the rest is served."""
    source = _fit(tmp_path / "source").logger.log_dir

    def reshape(event):
        for value in event.summary.value:
            if value.tag == LABELS_TAG and event.step == 6:
                value.tensor.tensor_shape.dim[0].size += 1
        return event

    rewrite_events(source, tmp_path / "logs" / "run", reshape)
    client = plugin_client(tmp_path / "logs")
    where = {"run": "run", "layer": "fc", "index": 0}
    for step in (6, 9):
        broken = client.get(
            "/data/plugin/deephys/image", query_string={**where, "dataset": "ood", "step": step}
        )
        assert broken.status_code == 404 and "damaged event record" in broken.json["error"]
        fine = client.get(
            "/data/plugin/deephys/image", query_string={**where, "dataset": "ind", "step": step}
        )
        assert fine.status_code == 200
    with pytest.raises(KeyError, match="unreadable: a damaged event record"):
        read_log(tmp_path / "logs" / "run").labels("ood", 6)


def test_logits_wider_or_narrower_than_the_class_names_are_not_damage(tmp_path):
    names = ["a", "b", "c", "d", "e", "f"]  # the head has 3 outputs
    t = trainer(tmp_path, [DeephysCallback(layer="fc", class_names=names, record_logits=True)])
    val = {"ind": loader(random_set(6, 1)), "ood": loader(random_set(6, 2))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    assert log.class_names == tuple(names) and log.logits("ind").shape == (6, 3)
