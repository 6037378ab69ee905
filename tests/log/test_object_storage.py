"""Logs on object storage and under ``--logdir_spec``: a real S3 API server (moto's,
on 127.0.0.1), real Trainer runs, a real tensorboard, and fsspec's ``memory://``."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
import requests
from cli_run import deephys_command
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from s3_server import new_bucket, objects, running_s3_server
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.run_dirs import RunDirectories, parse_logdir_spec

SETS = {"ind": (6, 1), "ood": (5, 2)}


def _val_loaders():
    return {name: loader(random_set(n, seed)) for name, (n, seed) in SETS.items()}


# -- the storage layer, on memory:// ----------------------------------------------------


def test_storage_writes_whole_objects_and_reads_ranges():
    url = "memory://deephys-test/run/plugins/a.bin"
    storage.write_bytes(url, b"0123456789")
    assert storage.read_bytes(url) == b"0123456789"
    assert storage.read_range(url, 3, 4) == b"3456"
    assert storage.read_range(url, 8, 10) == b"89"  # fewer where it ends
    assert storage.listdir("memory://deephys-test/run/plugins") == ["a.bin"]
    assert storage.isdir("memory://deephys-test/run") and storage.exists(url)
    assert storage.identity(url)[1] == 10
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("memory://deephys-test/run/absent")


def test_a_url_is_never_made_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("s3://bucket/exp/") == "s3://bucket/exp"
    assert storage.join("s3://bucket/exp", "a", "b") == "s3://bucket/exp/a/b"
    assert storage.normalize("relative") == str(tmp_path / "relative")


def test_a_protocol_without_its_backend_says_what_to_install():
    with pytest.raises(storage.MissingBackendError, match="no fsspec backend for nosuch://"):
        storage.read_bytes("nosuch://bucket/x")
    from fsspec.registry import known_implementations

    if "gs" in known_implementations:
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            with pytest.raises(storage.MissingBackendError, match="pip install gcsfs"):
                storage.read_bytes("gs://bucket/x")


def test_logdir_spec_runs_map_to_their_directories(tmp_path):
    spec = f"a:{tmp_path / 'one'},b:s3://bucket/two,{tmp_path / 'three'}"
    assert parse_logdir_spec(spec) == {
        str(tmp_path / "one"): "a",
        "s3://bucket/two": "b",
        str(tmp_path / "three"): None,
    }
    dirs = RunDirectories(logdir_spec=spec)
    assert dirs.path("a/.") == str(tmp_path / "one")
    assert dirs.path("b/version_0") == "s3://bucket/two/version_0"
    assert dirs.path("version_3") == str(tmp_path / "three" / "version_3")
    with pytest.raises(LookupError, match="below"):
        dirs.path("a/../../etc")
    with pytest.raises(LookupError, match="no --logdir_spec group names it"):
        RunDirectories(logdir_spec="a:/x").path("c/.")


def test_logdir_spec_groups_named_as_prefixes_or_empty_find_their_runs(tmp_path):
    """``a:DIR1,a/b:DIR2``: run ``a/b/x`` is DIR2's x unless only DIR1 holds ``b/x``;
    an empty name (``:DIR``) adds no prefix, as TensorBoard names those runs."""
    for folder in ("one/b/only_here", "two/x", "three/version_0"):
        (tmp_path / folder).mkdir(parents=True)
    dirs = RunDirectories(logdir_spec=f"a:{tmp_path / 'one'},a/b:{tmp_path / 'two'}")
    assert dirs.path("a/b/x") == str(tmp_path / "two" / "x")
    assert dirs.path("a/b/only_here") == str(tmp_path / "one" / "b" / "only_here")
    assert dirs.path("a/c") == str(tmp_path / "one" / "c")
    empty = RunDirectories(logdir_spec=f":{tmp_path / 'three'}")
    assert parse_logdir_spec(f":{tmp_path / 'three'}") == {str(tmp_path / "three"): None}
    assert empty.path("version_0") == str(tmp_path / "three" / "version_0")


def test_a_whole_record_on_memory_storage(tmp_path):
    """The callback's writes (thumbnails, state) and read_log through memory://: the
    events themselves go through TensorBoard's writer, which reads fsspec URLs too."""
    root = "memory://deephys-record/exp"
    logger = TensorBoardLogger(root, name="tiny")
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders())
    log = read_log(logger.log_dir)
    assert len(log.steps) == 2
    assert log.thumbnails("ood").shape[0] == 5
    assert not any(p.name.startswith(("memory", "events")) for p in tmp_path.rglob("*"))


# -- a real S3 API server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3_run(s3_server, tmp_path_factory):
    """A fit logged with TensorBoardLogger("s3://bucket/exp"), from an empty folder."""
    bucket = new_bucket()
    work = tmp_path_factory.mktemp("work")
    before = os.getcwd()
    os.chdir(work)
    try:
        logger = TensorBoardLogger(f"s3://{bucket}/exp", name="tiny")
        t = trainer(work, [DeephysCallback(layer="fc")], logger=logger)
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders())
    finally:
        os.chdir(before)
    return bucket, logger.log_dir, work


def test_a_fit_logged_to_s3_leaves_nothing_on_local_disk(s3_run):
    bucket, log_dir, work = s3_run
    assert list(work.rglob("*")) == []  # no "s3:" folder, no thumbnails, no state
    keys = objects(bucket)
    assert any(k.startswith("exp/tiny/version_0/events.out.tfevents") for k in keys)
    assert "exp/tiny/version_0/plugins/deephys/state.json" in keys
    thumbs = [k for k in keys if "/thumbnails/" in k and not k.endswith(".crc32c.npy")]
    assert len(thumbs) == 2  # one file per dataset, written once over two epochs
    assert not [k for k in keys if k.endswith(".tmp")]


def test_read_log_scores_and_export_read_from_s3(s3_run, tmp_path):
    bucket, log_dir, _ = s3_run
    log = read_log(f"s3://{bucket}/exp/tiny/version_0")
    assert len(log.steps) == 2
    assert log.activations("fc", "ood", log.steps[-1]).shape == (5, 5)
    thumbs = log.thumbnails("ind")
    assert thumbs.dtype == np.uint8 and thumbs.shape[0] == 6
    scores = deephys_command("scores", f"s3://{bucket}/exp", "--csv")
    assert scores.returncode == 0, scores.stderr
    rows = [line.split(",") for line in scores.stdout.splitlines()[1:]]
    assert sorted(int(r[1]) for r in rows) == sorted(log.steps)
    exported = deephys_command("export", f"s3://{bucket}/exp/tiny/version_0", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".model", ".test", ".test"]


def test_a_resumed_fit_continues_from_the_state_in_the_bucket(s3_server, tmp_path):
    bucket = new_bucket()
    checkpoints = tmp_path / "checkpoints"

    def fit(max_epochs, ckpt_path=None):
        logger = TensorBoardLogger(f"s3://{bucket}/exp", name="tiny", version=0)
        saver = ModelCheckpoint(dirpath=checkpoints, save_last=True)
        t = trainer(
            tmp_path,
            [DeephysCallback(layer="fc"), saver],
            logger=logger,
            max_epochs=max_epochs,
            enable_checkpointing=True,
        )
        t.fit(
            TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders(), ckpt_path=ckpt_path
        )

    fit(1)
    first = objects(bucket)
    fit(2, ckpt_path=str(checkpoints / "last.ckpt"))
    log = read_log(f"s3://{bucket}/exp/tiny/version_0")
    assert len(log.steps) == 2 and log.steps[0] < log.steps[1]
    thumbs = [k for k in objects(bucket) if "/thumbnails/" in k]
    assert thumbs == [k for k in first if "/thumbnails/" in k]  # the same: not written again


def _thumbnail(base, run, dataset, index=0):
    response = requests.get(
        f"{base}/data/plugin/deephys/thumbnail",
        params={"run": run, "dataset": dataset, "index": index},
        timeout=30,
    )
    return response


def _every_route(base, run) -> None:
    layer, ind = run["layers"][0], run["ind"]
    for entry in run["steps"]:
        where = {"run": run["run"], "layer": layer, "step": entry["step"]}
        for route, params in (
            ("summary", where),
            ("neuron", {**where, "neuron": 0}),
            ("image", {**where, "dataset": ind, "index": 0}),
            ("category", {**where, "dataset": ind, "label": 0}),
            ("thumbnail", {**where, "dataset": ind, "index": 0}),
            ("scores_over_time", {"run": run["run"], "layer": layer, "dataset": "ood"}),
        ):
            response = requests.get(
                f"{base}/data/plugin/deephys/{route}", params=params, timeout=30
            )
            assert response.status_code == 200, (route, params, response.text[:300])


def test_tensorboard_serves_an_s3_logdir_with_real_thumbnails(s3_run):
    """TensorBoard's Rust loader reads local and gs:// logs only: s3:// is served with
    --load_fast=false, whose S3 reader (boto3) honours AWS_ENDPOINT_URL."""
    bucket, log_dir, _ = s3_run
    with running_tensorboard(f"s3://{bucket}/exp", load_fast=False) as base:
        (run,) = requests.get(f"{base}/data/plugin/deephys/runs", timeout=30).json()["runs"]
        assert run["run"] == "tiny/version_0"
        _every_route(base, run)
        response = _thumbnail(base, run["run"], "ood", 4)
        assert response.headers["Content-Type"] == "image/png"
        image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        expected = read_log(log_dir).thumbnails("ood")[4]
        np.testing.assert_array_equal(image, expected)
        beyond = _thumbnail(base, run["run"], "ood", 99)
        assert beyond.status_code == 400 and "99" in beyond.json()["error"]


def test_logdir_spec_serves_both_runs_thumbnails(tmp_path, s3_run):
    """Two groups, one local and one on S3: each run's thumbnails are found."""
    bucket, log_dir, _ = s3_run
    local = tmp_path / "local"
    t = trainer(local, [DeephysCallback(layer="fc")])
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders())
    spec = f"mine:{local},cloud:s3://{bucket}/exp"
    with running_tensorboard(("--logdir_spec", spec), load_fast=False, runs=2) as base:
        runs = {
            r["run"]: r for r in requests.get(f"{base}/data/plugin/deephys/runs").json()["runs"]
        }
        assert sorted(runs) == ["cloud/tiny/version_0", "mine/tiny/version_0"]
        for name, run in runs.items():
            _every_route(base, run)
            response = _thumbnail(base, name, "ind", 2)
            assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
        # a run's thumbnails gone: 404 JSON in words, not a broken image
        shutil.rmtree(local / "tiny" / "version_0" / "plugins")
        gone = _thumbnail(base, "mine/tiny/version_0", "ood", 1)
        assert gone.status_code == 404 and "missing" in gone.json()["error"]


@pytest.mark.fault
def test_an_unreachable_store_is_a_404_in_words(s3_server, tmp_path):
    """The S3 server gone after TensorBoard loaded the events: the routes answer 404
    JSON naming the store and the cause (the step packs and thumbnails are there)."""
    from plugin_client import plugin_client

    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders())
    with running_s3_server() as endpoint:
        bucket = new_bucket()
        storage.filesystem("s3://x")[0].put(
            str(tmp_path / "tiny" / "version_0"), f"{bucket}/logs/run", recursive=True
        )
        client = plugin_client(f"s3://{bucket}/logs")
        running_s3_server.stop(endpoint)
        where = {"run": "run", "dataset": "ind", "index": 0}
        response = client.get("/data/plugin/deephys/thumbnail", query_string=where)
        summary = client.get(
            "/data/plugin/deephys/summary", query_string={"run": "run", "layer": "fc"}
        )
        for answer in (response, summary):
            assert answer.status_code == 404, answer.data[:300]
            error = answer.json["error"]
            assert "cannot be listed" in error and f"s3://{bucket}" in error, error


@pytest.mark.fault
def test_a_logdir_whose_backend_is_missing_says_what_to_install(tmp_path):
    """TensorBoard's data read, but the thumbnails' store has no fsspec backend here."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from tensorboard_plugin_deephys.deephys_plugin import DeephysPlugin

    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=_val_loaders())
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))
    context = base_plugin.TBContext(data_provider=provider, logdir="nosuch://bucket/logs")
    app = application.TensorBoardWSGI([DeephysPlugin(context)], data_provider=provider)
    client = werkzeug_test.Client(app)
    where = {"run": "tiny/version_0", "dataset": "ood", "index": 1}
    response = client.get("/data/plugin/deephys/thumbnail", query_string=where)
    assert response.status_code == 404
    assert "no fsspec backend for nosuch://" in response.json["error"]
