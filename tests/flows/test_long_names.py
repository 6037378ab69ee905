"""Long dataset names (issue 31, item 7): a real fit on local disk and on an S3 API
server records every step, with the real names in the record and the tags and their
thumbnails in files whose names any file system and object store accept."""

from __future__ import annotations

import io
import os
import time
import urllib.parse
import warnings

import numpy as np
import pytest
import requests
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from plugin_client import plugin_client
from s3_server import new_bucket, objects, running_s3_server
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import export_step
from tensorboard_plugin_deephys.log import metadata

ASCII = "".join(chr(ord("a") + i % 26) for i in range(1000))  # 1,000 characters
CJK = "".join(chr(0x4E00 + i) for i in range(1000))  # 1,000 characters, 3,000 UTF-8 bytes
SETS = {"ind": (6, 1), ASCII: (5, 2), CJK: (4, 3)}
PREFIX = "/data/plugin/deephys"


def _fit(tmp_path, logger=None):
    sets = {name: random_set(n, seed) for name, (n, seed) in SETS.items()}
    extra = {} if logger is None else {"logger": logger}
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2, **extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(
            TinyNet(),
            loader(random_set(8, 0)),
            val_dataloaders={name: loader(ds) for name, ds in sets.items()},
        )
    deephys = [str(w.message) for w in caught if "eephys" in str(w.message)]
    assert not deephys, deephys  # nothing was left out
    return t, sets


def _pixels(dataset) -> np.ndarray:
    x = dataset.tensors[0]
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def _check_log(run_dir: str, sets) -> None:
    log = read_log(run_dir)
    assert log.datasets == tuple(SETS)
    assert log.steps == (2, 4)  # every step recorded
    for step in log.steps:
        for name, dataset in sets.items():
            assert log.activations("fc", name, step).shape == (len(dataset), 5)
            np.testing.assert_array_equal(log.labels(name, step), dataset.tensors[1].numpy())
    for name, dataset in sets.items():
        np.testing.assert_array_equal(np.asarray(log.thumbnails(name)), _pixels(dataset))


def _check_plugin(logdir: str, sets) -> None:
    client = plugin_client(logdir)
    (info,) = client.get(f"{PREFIX}/runs").json["runs"]
    assert info["datasets"] == list(SETS)
    run = urllib.parse.quote(info["run"], safe="")
    body = client.get(f"{PREFIX}/neuron?run={run}&layer=fc&neuron=0&k=3").json
    assert [d["name"] for d in body["datasets"]] == list(SETS)
    for name, dataset in sets.items():
        query = urllib.parse.urlencode({"dataset": name, "index": 1})
        response = client.get(f"{PREFIX}/thumbnail?run={run}&{query}")
        assert response.status_code == 200, response.data[:300]
        image = np.asarray(Image.open(io.BytesIO(response.data)))
        np.testing.assert_array_equal(image, _pixels(dataset)[1])


def _check_export(run_dir: str, out_dir) -> None:
    rename = {ASCII: "long_ascii", CJK: "long_cjk"}  # the .test format holds 40 characters
    files = export_step(run_dir, out_dir, rename=rename)
    assert set(files.tests) == set(SETS)
    assert sorted(p.suffix for p in out_dir.iterdir()) == [".model", ".test", ".test", ".test"]


def _check_file_names(names) -> None:
    thumbs = [n for n in names if n.endswith(metadata.PACK_SUFFIX)]
    assert len(thumbs) == len(SETS)  # one per dataset, written once over both steps
    for name in names:
        assert len(name.encode("utf-8")) <= 200  # 255 allowed per path component
        assert len(name.encode("utf-16-le")) // 2 <= 200  # Windows counts UTF-16 units


@pytest.fixture(scope="module")
def local_fit(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("long_names")
    t, sets = _fit(tmp_path)
    return tmp_path, t, sets


def test_a_fit_with_long_dataset_names_records_every_step(local_fit):
    tmp_path, t, sets = local_fit
    run_dir = t.logger.log_dir
    _check_log(run_dir, sets)
    folder = os.path.join(run_dir, *metadata.ASSET_ROOT.split("/"), metadata.THUMBNAIL_DIR)
    _check_file_names(os.listdir(folder))
    _check_plugin(str(tmp_path / "tiny"), sets)
    _check_export(run_dir, tmp_path / "export")


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_a_real_tensorboard_serves_long_names(local_fit, load_fast):
    # Tags hold the names escaped (9 characters per CJK character here): neither
    # loader limits their length.
    tmp_path, _, sets = local_fit
    with running_tensorboard(tmp_path / "tiny", load_fast=load_fast) as base:
        url = f"{base}{PREFIX}"
        runs: list = []
        for _ in range(60):  # until both steps are loaded
            runs = requests.get(f"{url}/runs", timeout=30).json()["runs"]
            if runs and len(runs[0]["steps"]) == 2:
                break
            time.sleep(0.5)
        (info,) = runs
        assert info["datasets"] == list(SETS) and len(info["steps"]) == 2
        neuron = requests.get(
            f"{url}/neuron", params={"run": info["run"], "layer": "fc"}, timeout=30
        ).json()
        assert [d["name"] for d in neuron["datasets"]] == list(SETS)
        for name, dataset in sets.items():
            params = {"run": info["run"], "dataset": name, "index": 2}
            response = requests.get(f"{url}/thumbnail", params=params, timeout=30)
            assert response.status_code == 200, response.text[:300]
            image = np.asarray(Image.open(io.BytesIO(response.content)))
            np.testing.assert_array_equal(image, _pixels(dataset)[2])


@pytest.fixture(scope="module")
def s3_server():
    with running_s3_server() as endpoint:
        yield endpoint


def test_long_dataset_names_on_s3(s3_server, tmp_path, monkeypatch):
    bucket = new_bucket()
    monkeypatch.chdir(tmp_path)
    logger = TensorBoardLogger(f"s3://{bucket}/exp", name="tiny")
    _, sets = _fit(tmp_path, logger=logger)
    keys = objects(bucket)
    assert all(len(key.encode("utf-8")) <= 1024 for key in keys)  # S3's limit per key
    _check_file_names([key.rsplit("/", 1)[1] for key in keys if "/thumbnails/" in key])
    assert not [k for k in keys if k.endswith(".tmp")]
    run_dir = logger.log_dir
    _check_log(run_dir, sets)
    _check_plugin(f"s3://{bucket}/exp", sets)
    _check_export(run_dir, tmp_path / "export")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("猫" * 3000, r"has a name of 18002 bytes in the log's JSON .* over 16384"),
        ("a" * 16383, r"has a name of 16385 bytes"),
        ("bad\ud800", "UTF-8 cannot encode"),
    ],
    ids=["cjk", "ascii", "surrogate"],
)
def test_a_name_the_log_cannot_hold_is_refused_before_training(tmp_path, name, message):
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from tiny_model import CountingNet

    model = CountingNet()
    val = {"ind": loader(random_set(8, 1)), name: loader(random_set(8, 2))}
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.raises(MisconfigurationException, match=message):
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=val)
    assert model.trained == 0


def test_the_longest_name_accepted_is_read_back_whole():
    # At the bound, a content with the name and a long layer name is still readable.
    name = "猫" * ((metadata.MAX_NAME_CONTENT_BYTES - 2) // 6)
    assert metadata.name_content_bytes(name) <= metadata.MAX_NAME_CONTENT_BYTES
    md = metadata.create_summary_metadata(
        metadata.Kind.ACTIVATIONS, layer="l" * 40000, dataset=name
    )
    content = metadata.read_plugin_content(md.plugin_data.content)
    assert content is not None and content.dataset == name
