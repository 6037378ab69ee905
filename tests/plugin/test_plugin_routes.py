"""Plugin routes through TensorBoard's own WSGI app over the demo log (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from plugin_client import plugin_client

PREFIX = "/data/plugin/deephys"


@pytest.fixture(scope="module")
def client(demo_log_dir):
    return plugin_client(demo_log_dir[0])


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
    assert response.headers["Cache-Control"] == "no-cache"  # not named by its content
    assert response.headers["ETag"].endswith('-3"')
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


@pytest.mark.fault
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


LAYER = "backbone.fc1"


def test_summary_has_accuracy_confusion_and_scores(client, run, demo_log):
    step = demo_log.steps[-1]
    body = client.get(f"{PREFIX}/summary?run={run}&layer={LAYER}").json
    assert body["step"] == step and body["num_neurons"] == 50
    for dataset in body["datasets"]:
        labels = demo_log.labels(dataset["name"], step)
        preds = demo_log.predictions(dataset["name"], step)
        assert dataset["accuracy"] == pytest.approx(np.mean(labels == preds))
        confusion = np.array(dataset["confusion"])
        assert confusion.sum() == len(labels)
        assert confusion[labels[0], preds[0]] == np.sum((labels == labels[0]) & (preds == preds[0]))
        if dataset["role"] == "ood":
            scores = demo_log.scores(LAYER, dataset["name"], step)
            got = np.array(dataset["scores"]["spurious"], dtype=float)
            np.testing.assert_allclose(got, scores.spurious, rtol=1e-6, equal_nan=True)
            summary = scores.summary()
            assert dataset["summary"]["novelty_mean"] == pytest.approx(summary["novelty_mean"])
            assert dataset["summary"]["spurious_undefined"] == summary["spurious_undefined"]
            density = dataset["densities"]["spurious"]
            widths = np.diff(density["edges"])
            assert np.sum(np.array(density["density"]) * widths) == pytest.approx(1.0)


def test_image_lists_its_top_neurons_and_their_top_images(client, run, demo_log):
    step = demo_log.steps[-1]
    body = client.get(
        f"{PREFIX}/image?run={run}&layer={LAYER}&dataset=permuted&index=5&n=4&k=3"
    ).json
    assert body["label"] == demo_log.labels("permuted", step)[5]
    assert body["prediction"] == demo_log.predictions("permuted", step)[5]
    ind_max = demo_log.activations(LAYER, "colored", step).astype(np.float32).max(axis=0)
    row = demo_log.activations(LAYER, "permuted", step).astype(np.float32)[5]
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.where(ind_max > 0, row / ind_max, np.nan)
    expected = sorted(
        range(50), key=lambda j: (np.isnan(normalized[j]), -np.nan_to_num(normalized[j]), j)
    )[:4]
    assert [t["neuron"] for t in body["top_neurons"]] == expected
    for top in body["top_neurons"]:
        assert set(top["top_images"]) == {"colored", "permuted"}
        indices, _ = demo_log.top_images(LAYER, "permuted", step)
        assert [i["index"] for i in top["top_images"]["permuted"]] == indices[
            top["neuron"], :3
        ].tolist()


def test_category_and_confusion_set(client, run, demo_log):
    step = demo_log.steps[-1]
    acts = demo_log.activations(LAYER, "permuted", step).astype(np.float32)
    ind_max = demo_log.activations(LAYER, demo_log.datasets[0], step).astype(np.float32).max(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.where(ind_max > 0, acts / ind_max, np.nan)
    labels, preds = demo_log.labels("permuted", step), demo_log.predictions("permuted", step)
    body = client.get(f"{PREFIX}/category?run={run}&layer={LAYER}&dataset=permuted&label=3").json
    assert body["num_images"] == int(np.sum(labels == 3))
    assert [i["index"] for i in body["images"]] == np.flatnonzero(labels == 3)[:50].tolist()
    # neurons ranked by the mean normalized activation (the paper's category means)
    means = np.nan_to_num(normalized[labels == 3].mean(axis=0), nan=-np.inf)
    assert body["neurons"][0]["neuron"] == int(np.argmax(means))
    assert body["neurons"][0]["mean"] == pytest.approx(means.max(), rel=1e-3)
    a, b = next((int(x), int(y)) for x, y in zip(labels, preds, strict=True) if x != y)
    pair = client.get(
        f"{PREFIX}/category?run={run}&layer={LAYER}&dataset=permuted&label={a}&pred={b}&page_size=2"
    ).json
    members = np.flatnonzero((labels == a) & (preds == b))
    assert pair["num_images"] == len(members) and pair["either"] is False
    assert pair["means"] == "normalized"
    assert [i["index"] for i in pair["images"]] == members[:2].tolist()
    pair_means = np.nan_to_num(normalized[members].mean(axis=0), nan=-np.inf)
    assert pair["neurons"][0]["neuron"] == int(np.argmax(pair_means))
    assert pair["neurons"][0]["mean"] == pytest.approx(pair_means.max(), rel=1e-3)
    # the paper's confusion set: false positives and negatives in either direction
    both = (labels == a) & (preds == b) | (labels == b) & (preds == a)
    for x, y in ((a, b), (b, a)):
        either = client.get(
            f"{PREFIX}/category?run={run}&layer={LAYER}&dataset=permuted&label={x}&pred={y}"
            "&either=1&page_size=500"
        ).json
        assert either["either"] is True and either["either_available"] is True
        assert [i["index"] for i in either["images"]] == np.flatnonzero(both)[:500].tolist()
        either_means = np.nan_to_num(normalized[both].mean(axis=0), nan=-np.inf)
        order = np.argsort(-either_means, kind="stable")[:16]
        assert [n["neuron"] for n in either["neurons"]] == order.tolist()
        assert either["neurons"][0]["mean"] == pytest.approx(either_means.max(), rel=1e-3)
    for bad in (
        f"label={a}&pred={a}&either=1",
        f"label={a}&either=1",
        f"label={a}&pred={b}&either=yes",
    ):
        response = client.get(f"{PREFIX}/category?run={run}&layer={LAYER}&dataset=permuted&{bad}")
        assert response.status_code == 400 and "error" in response.json
    missing = [
        (x, y) for x in range(10) for y in range(10) if not np.any((labels == x) & (preds == y))
    ]
    x, y = missing[0]
    response = client.get(
        f"{PREFIX}/category?run={run}&layer={LAYER}&dataset=permuted&label={x}&pred={y}"
    )
    assert response.status_code == 404


def test_scores_over_time(client, run, demo_log):
    body = client.get(f"{PREFIX}/scores_over_time?run={run}&layer={LAYER}&dataset=arbitrary").json
    assert [p["step"] for p in body["points"]] == list(demo_log.steps)
    for point, step in zip(body["points"], demo_log.steps, strict=True):
        summary = demo_log.scores(LAYER, "arbitrary", step).summary()
        assert point["novelty"] == pytest.approx(summary["novelty_mean"])
    one = client.get(
        f"{PREFIX}/scores_over_time?run={run}&layer={LAYER}&dataset=arbitrary&neuron=3"
    ).json
    scores = demo_log.scores(LAYER, "arbitrary", demo_log.steps[-1])
    assert one["points"][-1]["activation_ratio"] == pytest.approx(float(scores.activation_ratio[3]))
    assert (
        client.get(f"{PREFIX}/scores_over_time?run={run}&layer={LAYER}&dataset=colored").status_code
        == 404
    )


@pytest.mark.parametrize(
    "query",
    [
        "image?run={run}&layer=backbone.fc1&dataset=colored&index=-1",
        "image?run={run}&layer=backbone.fc1&dataset=colored&index=999999",
        "image?run={run}&layer=backbone.fc1&dataset=colored&index=0&n=0",
        "category?run={run}&layer=backbone.fc1&dataset=colored&label=10",
        "category?run={run}&layer=backbone.fc1&dataset=colored&label=1&page_size=100000",
        "scores_over_time?run={run}&layer=backbone.fc1&dataset=arbitrary&neuron=50",
        "summary?run={run}",
    ],
)
def test_more_bad_parameters_get_400_json(client, run, query):
    response = client.get(f"{PREFIX}/" + query.format(run=run))
    assert response.status_code == 400
    assert response.json["error"]


def test_several_runs_layers_and_names_with_html(tmp_path):
    from tiny_model import TinyNet, loader, random_set, trainer

    from deephys_lightning import DeephysCallback

    hostile = '<img src=x onerror="alert(1)">'
    for version, layers in enumerate((["fc"], ["fc", "features.0"])):
        t = trainer(
            tmp_path,
            [DeephysCallback(layers=layers, class_names=[hostile, "b", "c"])],
            max_epochs=version + 1,
        )
        t.fit(
            TinyNet(),
            loader(random_set(12, 0)),
            val_dataloaders={"ind": loader(random_set(5, 1)), hostile: loader(random_set(4, 2))},
        )
    client = plugin_client(tmp_path)
    runs = {r["run"]: r for r in client.get(f"{PREFIX}/runs").json["runs"]}
    assert sorted(runs) == ["tiny/version_0", "tiny/version_1"]
    assert runs["tiny/version_1"]["layers"] == ["fc", "features.0"]
    assert len(runs["tiny/version_1"]["steps"]) == 2
    assert runs["tiny/version_0"]["datasets"] == ["ind", hostile]  # data, verbatim
    assert runs["tiny/version_0"]["class_names"][0] == hostile
    for layer, neurons in (("fc", 5), ("features.0", 4)):
        body = client.get(f"{PREFIX}/neuron?run=tiny/version_1&layer={layer}&neuron=1").json
        assert body["num_neurons"] == neurons
        assert [d["name"] for d in body["datasets"]] == ["ind", hostile]
    step0 = runs["tiny/version_1"]["steps"][0]["step"]
    older = client.get(f"{PREFIX}/neuron?run=tiny/version_1&layer=fc&neuron=0&step={step0}")
    assert older.status_code == 200 and older.json["step"] == step0
    response = client.get(f"{PREFIX}/runs")
    assert response.headers["Content-Type"].startswith("application/json")


def test_stage_and_part_of_a_set_reach_the_tab(tmp_path):
    from tiny_model import TinyNet, loader, random_set, trainer

    from deephys_lightning import DeephysCallback

    model = TinyNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1, limit_val_batches=1)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(8, 2))}
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=val)
    t.test(model, dataloaders=val)
    client = plugin_client(tmp_path)
    runs = {r["run"]: r for r in client.get(f"{PREFIX}/runs").json["runs"]}
    assert [s["stage"] for s in runs["tiny/version_0"]["steps"]] == ["fit"]
    assert [s["stage"] for s in runs["tiny/version_0/test_step3"]["steps"]] == ["test"]
    body = client.get(f"{PREFIX}/summary?run=tiny/version_0&layer=fc").json
    assert body["stage"] == "fit"
    counts = {d["name"]: (d["num_images"], d["dataset_size"]) for d in body["datasets"]}
    assert counts == {"ind": (4, 12), "ood": (4, 8)}  # one batch of 4 of each set
    tested = client.get(f"{PREFIX}/summary?run=tiny/version_0/test_step3&layer=fc").json
    assert tested["stage"] == "test"
    assert {d["name"]: d["num_images"] for d in tested["datasets"]} == {"ind": 12, "ood": 8}


@pytest.mark.fault
def test_a_malformed_record_leaves_the_other_runs_in_the_tab(tmp_path):
    import json
    import os

    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning.writing.summaries import EventFileSink, blob_summary
    from tensorboard_plugin_deephys.log.metadata import Kind, Record

    good = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=("ind",),
        class_names=("a",),
        num_images={"ind": 0},
        top_k=1,
    )
    for run, record in (("good", json.loads(good.to_json())), ("bad", None)):
        if record is None:  # what a damaged or foreign writer could leave: no datasets
            record = {**json.loads(good.to_json()), "datasets": [], "num_images": {}}
        os.makedirs(tmp_path / run)
        sink = EventFileSink(EventFileWriter(str(tmp_path / run)))
        sink.add_summary(blob_summary(Kind.RECORD, [json.dumps(record).encode()]), 1)
        sink.close()
    response = plugin_client(tmp_path).get(f"{PREFIX}/runs")
    assert response.status_code == 200
    assert [r["run"] for r in response.json["runs"]] == ["good"]
