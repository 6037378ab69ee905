"""A real ``tensorboard`` process, with the Python loader and with the Rust data server."""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pytest
import requests
from PIL import Image
from tensorboard_process import running_tensorboard


@pytest.fixture(scope="module", params=[False, True], ids=["load_fast=false", "load_fast=true"])
def server(request, demo_log_dir):
    with running_tensorboard(demo_log_dir[0], load_fast=request.param) as base:
        yield base


@pytest.fixture(scope="module")
def run(demo_log_dir):
    return os.path.relpath(demo_log_dir[1], demo_log_dir[0])


def test_plugins_listing_lists_deephys(server):
    listing = requests.get(f"{server}/data/plugins_listing", timeout=10).json()
    assert listing["deephys"]["enabled"] is True
    assert listing["deephys"]["tab_name"] == "Deephys"
    assert listing["deephys"]["loading_mechanism"]["module_path"].endswith("/static/index.js")


def test_neuron_route_returns_the_top_images(server, run, demo_log):
    for step in demo_log.steps:
        acts = demo_log.activations("backbone.fc1", "arbitrary", step).astype(np.float32)
        ind = demo_log.activations("backbone.fc1", "colored", step).astype(np.float32)
        neuron = int(np.argmax(ind.max(axis=0)))
        response = requests.get(
            f"{server}/data/plugin/deephys/neuron",
            params={"run": run, "layer": "backbone.fc1", "neuron": neuron, "k": 6, "step": step},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        (arbitrary,) = [d for d in body["datasets"] if d["name"] == "arbitrary"]
        column = acts[:, neuron]
        expected = sorted(range(len(column)), key=lambda i: (-column[i], i))[:6]
        assert [im["index"] for im in arbitrary["images"]] == expected
        got = [im["normalized"] for im in arbitrary["images"]]
        np.testing.assert_allclose(got, column[expected] / ind[:, neuron].max(), rtol=1e-5)


def test_runs_and_thumbnails(server, run, demo_log):
    runs = requests.get(f"{server}/data/plugin/deephys/runs", timeout=10).json()["runs"]
    assert [r["run"] for r in runs] == [run]
    response = requests.get(
        f"{server}/data/plugin/deephys/thumbnail",
        params={"run": run, "dataset": "drifted", "index": 0},
        timeout=10,
    )
    assert response.status_code == 200
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(image, demo_log.thumbnails("drifted")[0])


def test_bad_parameter_is_json_400(server, run):
    response = requests.get(
        f"{server}/data/plugin/deephys/neuron",
        params={"run": run, "layer": "backbone.fc1", "neuron": "x"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "integer" in response.json()["error"]


@pytest.mark.fault
@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_a_run_named_with_a_quote_spoils_only_itself(tmp_path, demo_log_dir, load_fast):
    # The Rust data server cannot parse its own blob keys for a run whose name JSON
    # escapes (tensorboard/data/server/blob_key.rs): that run alone is unreadable.
    shutil.copytree(demo_log_dir[1], tmp_path / "good")
    shutil.copytree(demo_log_dir[1], tmp_path / 'bad"run')
    with running_tensorboard(tmp_path, load_fast=load_fast) as base:
        deadline = time.monotonic() + 60
        while len(requests.get(f"{base}/data/runs", timeout=10).json()) < 2:
            assert time.monotonic() < deadline, "tensorboard never loaded both runs"
            time.sleep(0.5)
        time.sleep(2.5)  # past the plugin's 2 s listing cache
        runs = requests.get(f"{base}/data/plugin/deephys/runs", timeout=30)
        assert runs.status_code == 200, runs.text
        listed = [r["run"] for r in runs.json()["runs"]]
        assert listed == (["good"] if load_fast else ['bad"run', "good"])
        for name in ("good", 'bad"run'):
            response = requests.get(
                f"{base}/data/plugin/deephys/summary",
                params={"run": name, "layer": "backbone.fc1"},
                timeout=30,
            )
            if load_fast and name != "good":
                assert response.status_code == 404, response.text
                assert "--load_fast=false" in response.json()["error"]
            else:
                assert response.status_code == 200, response.text
                assert response.json()["run"] == name
