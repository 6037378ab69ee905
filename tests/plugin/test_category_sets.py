"""A category across every set (issue 30, item 2): the ``category_sets`` route, and the
category route's pages of false positives and negatives, through TensorBoard's WSGI
app. Every number is recomputed here with numpy from ``read_log``'s arrays: the full
activation matrices, the InD maxima, the labels and predictions.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from plugin_client import plugin_client
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log.metadata import Record

PREFIX = "/data/plugin/deephys"
LAYER = "backbone.fc1"
LOST_MARKED = 3  # the rule the route documents: the 3 lowest kept shares below 1


@pytest.fixture(scope="module")
def client(demo_log_dir):
    return plugin_client(demo_log_dir[0])


@pytest.fixture(scope="module")
def run(demo_log_dir):
    return os.path.relpath(demo_log_dir[1], demo_log_dir[0])


def _category_means(log, dataset: str, step: int, label: int) -> np.ndarray:
    """Mean over the images of ``label`` of the activations normalized by the InD
    maxima (float64; NaN for dead neurons and a set without such images)."""
    ind_max = log.maxima(LAYER, log.datasets[0], step).astype(np.float64)
    acts = log.activations(LAYER, dataset, step).astype(np.float64)
    members = acts[log.labels(dataset, step) == label]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = members.mean(axis=0) if len(members) else np.full(acts.shape[1], np.nan)
        return np.where(ind_max > 0, mean / ind_max, np.nan)


def _top(means: np.ndarray, n: int) -> list[int]:
    """The ``n`` highest, ties to the lower neuron, NaN last."""
    return np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")[:n].tolist()


def _recall(log, dataset: str, step: int, label: int) -> float | None:
    labels, preds = log.labels(dataset, step), log.predictions(dataset, step)
    counted = (labels == label) & (preds != -1)
    return float(np.mean(preds[counted] == label)) if counted.any() else None


@pytest.mark.parametrize("label", [0, 3, 7])
def test_each_set_keeps_a_share_of_the_ind_top_neurons(client, run, demo_log, label):
    log, step, n, k = demo_log, demo_log.steps[-1], 6, 4
    body = client.get(
        f"{PREFIX}/category_sets?run={run}&layer={LAYER}&label={label}&n={n}&k={k}"
    ).json
    assert (body["label"], body["n"], body["k"], body["step"]) == (label, n, k, step)
    assert body["lost_marked"] == LOST_MARKED
    assert [d["name"] for d in body["datasets"]] == list(log.datasets)  # InD first
    assert [d["role"] for d in body["datasets"]] == ["ind"] + ["ood"] * (len(log.datasets) - 1)
    ind_means = _category_means(log, log.datasets[0], step, label)
    ind_top = _top(ind_means, n)
    for entry in body["datasets"]:
        dataset = entry["name"]
        labels = log.labels(dataset, step)
        means = _category_means(log, dataset, step, label)
        assert entry["num_images"] == int(np.sum(labels == label))
        assert entry["accuracy"] == pytest.approx(_recall(log, dataset, step, label))
        assert [i["index"] for i in entry["images"]] == np.flatnonzero(labels == label)[:k].tolist()
        # the set's own top neurons, by its mean normalized activation on the class
        assert [x["neuron"] for x in entry["neurons"]] == _top(means, n)
        assert [x["mean"] for x in entry["neurons"]] == pytest.approx(
            means[_top(means, n)], rel=1e-3
        )
        # the InD top neurons there, and the share of their InD mean they keep
        rows = entry["ind_neurons"]
        assert [x["neuron"] for x in rows] == ind_top
        assert [x["ind_mean"] for x in rows] == pytest.approx(ind_means[ind_top], rel=1e-3)
        assert [x["mean"] for x in rows] == pytest.approx(means[ind_top], rel=1e-3)
        kept = means[ind_top] / ind_means[ind_top]
        assert [x["kept"] for x in rows] == pytest.approx(kept, rel=1e-3)
        losing = [i for i in np.argsort(kept, kind="stable") if kept[i] < 1][:LOST_MARKED]
        expected = set() if entry["role"] == "ind" else {ind_top[i] for i in losing}
        assert {x["neuron"] for x in rows if x["lost"]} == expected


def test_the_ind_column_keeps_everything_and_marks_nothing(client, run, demo_log):
    body = client.get(f"{PREFIX}/category_sets?run={run}&layer={LAYER}&label=5").json
    ind = body["datasets"][0]
    assert len(ind["ind_neurons"]) == 10 and len(ind["images"]) <= 12  # the defaults
    assert all(x["kept"] == pytest.approx(1.0) and not x["lost"] for x in ind["ind_neurons"])
    assert [x["neuron"] for x in ind["ind_neurons"]] == [x["neuron"] for x in ind["neurons"]]
    assert any(x["lost"] for d in body["datasets"][1:] for x in d["ind_neurons"])


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("layer={layer}&label=10", 400, "label 10 is out of range"),
        ("layer={layer}&label=-1", 400, "label -1 is out of range"),
        ("layer={layer}&label=x", 400, "'label' must be an integer"),
        ("layer={layer}&label=1&n=0", 400, "'n' must be in [1, 16]"),
        ("layer={layer}&label=1&n=17", 400, "'n' must be in [1, 16]"),
        ("layer={layer}&label=1&k=101", 400, "'k' must be in [0, 100]"),
        ("label=1", 400, "missing query parameter 'layer'"),
        ("layer=nope&label=1", 404, "layer 'nope' was not recorded"),
        ("layer={layer}&label=1&step=99999", 404, ""),
    ],
)
def test_bad_parameters_get_4xx_json(client, run, query, status, error):
    response = client.get(f"{PREFIX}/category_sets?run={run}&" + query.format(layer=LAYER))
    assert response.status_code == status
    assert error in response.json["error"]


def test_an_unknown_run_is_404_json(client):
    response = client.get(f"{PREFIX}/category_sets?run=nope&layer={LAYER}&label=1")
    assert response.status_code == 404 and response.json["error"]


# -- the category route's pages of mistakes -----------------------------------------

CLASSES, IMAGES, PAGE = 4, 200, 24


@pytest.fixture(scope="module")
def many_mistakes(tmp_path_factory):
    """A log whose class 0 has 60 false positives and 45 false negatives (some images
    without a prediction, which are neither), and its labels and predictions."""
    logdir = tmp_path_factory.mktemp("many_mistakes")
    rng = np.random.default_rng(0)
    labels = np.arange(IMAGES) % CLASSES
    preds = labels.copy()
    preds[np.flatnonzero(labels != 0)[:60]] = 0
    preds[np.flatnonzero(labels == 0)[:45]] = 2
    preds[np.flatnonzero(labels == 0)[45:47]] = -1
    logits = rng.normal(size=(IMAGES, CLASSES)).astype(np.float32)
    logits[np.arange(IMAGES), np.maximum(preds, 0)] += 3
    logits[preds == -1] = np.nan
    sink = EventFileSink(EventFileWriter(str(logdir / "run")))
    recording = DatasetRecording(
        labels=labels,
        predictions=preds,
        activations={"fc": rng.random((IMAGES, 6)).astype(np.float16)},
        thumbnails=rng.integers(0, 255, (IMAGES, 8, 8, 3), dtype=np.uint8),
        logits=logits,
    )
    record = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=tuple(f"c{i}" for i in range(CLASSES)),
        num_images={"ind": IMAGES, "ood": IMAGES},
        top_k=4,
    )
    write_record(sink, record, {"ind": recording, "ood": recording}, log_dir=str(logdir / "run"))
    sink.close()
    return plugin_client(logdir), labels, preds


def test_mistakes_page_beyond_the_first_24(many_mistakes):
    client, labels, preds = many_mistakes
    where = f"{PREFIX}/category?run=run&layer=fc&dataset=ood&label=0"
    false_positives = np.flatnonzero((preds == 0) & (labels != 0))
    false_negatives = np.flatnonzero((labels == 0) & (preds != 0) & (preds != -1))
    assert (len(false_positives), len(false_negatives)) == (60, 45)
    pages: dict[tuple[str, int], list[int]] = {}
    for fp_page, fn_page in ((0, 0), (1, 1), (2, 0)):
        body = client.get(f"{where}&fp_page={fp_page}&fn_page={fn_page}").json
        for key, page, members in (
            ("false_positives", fp_page, false_positives),
            ("false_negatives", fn_page, false_negatives),
        ):
            listed = body[key]
            assert (listed["count"], listed["page"], listed["page_size"]) == (
                len(members),
                page,
                PAGE,
            )
            shown = [i["index"] for i in listed["images"]]
            assert len(shown) == min(PAGE, len(members) - page * PAGE)
            confidences = [i["confidence"] for i in listed["images"]]
            assert confidences == sorted(confidences, reverse=True)  # most confident first
            pages[key, page] = shown
    for key, members, count in (
        ("false_positives", false_positives, 3),
        ("false_negatives", false_negatives, 2),
    ):  # the pages together: each mistake once
        together = [i for page in range(count) for i in pages[key, page]]
        assert sorted(together) == members.tolist()
    for bad, error in (
        ("fp_page=3", "page 3 is out of range: 3 pages of 24 false positives (0–2)"),
        ("fn_page=2", "page 2 is out of range: 2 pages of 24 false negatives (0–1)"),
        ("fp_page=-1", "page -1 is out of range"),
        ("fp_page=x", "'fp_page' must be an integer"),
        ("pred=2&fp_page=1", "fp_page and fn_page page a category"),
    ):
        response = client.get(f"{where}&{bad}")
        assert response.status_code == 400 and error in response.json["error"], bad
