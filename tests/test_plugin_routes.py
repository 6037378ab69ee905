"""Plugin routes through TensorBoard's own WSGI app over the demo log (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from tb_plugin.deephys_plugin import DeephysPlugin

PREFIX = "/data/plugin/deephys"


@pytest.fixture(scope="module")
def client(demo_log_dir):
    logdir = str(demo_log_dir[0])
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    plugin = DeephysPlugin(base_plugin.TBContext(data_provider=provider, logdir=logdir))
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    return werkzeug_test.Client(app)


@pytest.fixture(scope="module")
def run(demo_log, demo_log_dir):
    import os

    return os.path.relpath(demo_log_dir[1], demo_log_dir[0])


def test_runs_lists_the_demo_run(client, run, demo_log):
    body = client.get(f"{PREFIX}/runs").json
    (info,) = body["runs"]
    assert info["run"] == run
    assert info["datasets"] == ["colored", "permuted", "arbitrary", "drifted"]
    assert info["ind"] == "colored"
    assert info["layers"] == ["backbone.fc1"]
    assert [s["step"] for s in info["steps"]] == list(demo_log.steps)


def test_neuron_returns_top_images_normalised_by_the_ind_max(client, run, demo_log):
    step = demo_log.steps[-1]
    acts = {
        d: demo_log.activations("backbone.fc1", d, step).astype(np.float32)
        for d in demo_log.datasets
    }
    neuron = int(np.argmax(acts["colored"].max(axis=0)))  # a live neuron
    body = client.get(f"{PREFIX}/neuron?run={run}&layer=backbone.fc1&neuron={neuron}&k=5").json
    ind_max = acts["colored"][:, neuron].max()
    assert body["step"] == step and body["num_neurons"] == 50
    for dataset in body["datasets"]:
        column = acts[dataset["name"]][:, neuron]
        expected = sorted(range(len(column)), key=lambda i: (-column[i], i))[:5]
        assert [im["index"] for im in dataset["images"]] == expected
        for image in dataset["images"]:
            assert image["normalized"] == pytest.approx(column[image["index"]] / ind_max, rel=1e-5)
            assert image["label"] == demo_log.labels(dataset["name"], step)[image["index"]]
        if dataset["role"] == "ood":
            assert dataset["activation_ratio"] == pytest.approx(column.max() / ind_max, rel=1e-5)
            scores = demo_log.scores("backbone.fc1", dataset["name"], step)
            assert dataset["novelty"] == pytest.approx(float(scores.novelty[neuron]))
            spurious = float(scores.spurious[neuron])
            assert dataset["spurious"] == (
                pytest.approx(spurious) if np.isfinite(spurious) else None
            )
        else:
            assert dataset["novelty"] is None and dataset["spurious"] is None


def test_thumbnail_is_the_recorded_image(client, run, demo_log):
    response = client.get(f"{PREFIX}/thumbnail?run={run}&dataset=permuted&index=3")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert "max-age" in response.headers["Cache-Control"]
    image = np.asarray(Image.open(io.BytesIO(response.data)))
    np.testing.assert_array_equal(image, demo_log.thumbnails("permuted")[3])


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("neuron?layer=backbone.fc1&neuron=0", 400),  # no run
        ("neuron?run={run}&layer=backbone.fc1&neuron=abc", 400),
        ("neuron?run={run}&layer=backbone.fc1&neuron=-1", 400),
        ("neuron?run={run}&layer=backbone.fc1&neuron=99999999999999999999", 400),
        ("neuron?run={run}&layer=backbone.fc1&neuron=50", 400),
        ("neuron?run={run}&layer=backbone.fc1&neuron=0&k=0", 400),
        ("neuron?run={run}&layer=nope&neuron=0", 404),
        ("neuron?run=nope&layer=backbone.fc1&neuron=0", 404),
        ("neuron?run={run}&layer=backbone.fc1&neuron=0&step=12345", 404),
        ("thumbnail?run={run}&dataset=nope&index=0", 404),
        ("thumbnail?run={run}&dataset=colored&index=100000", 400),
    ],
)
def test_bad_parameters_get_4xx_json(client, run, query, status):
    response = client.get(f"{PREFIX}/" + query.format(run=run))
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json["error"]


def test_static_files_are_served(client):
    response = client.get(f"{PREFIX}/static/index.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["Content-Type"]
    assert b"export async function render" in response.data


@pytest.mark.parametrize(
    "path",
    [
        "static/../deephys_plugin.py",
        "static/%2e%2e/deephys_plugin.py",
        "static/..%2fmetadata.py",
        "static//etc/passwd",
        "static/./index.js",
        "static/nope.js",
    ],
)
def test_static_route_refuses_traversal(client, path):
    response = client.get(f"{PREFIX}/{path}")
    assert response.status_code == 404
    assert b"import" not in response.data
