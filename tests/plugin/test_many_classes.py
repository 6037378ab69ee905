"""Routes stay bounded at ImageNet-21k's 21,841 classes (issue 31, problem 3).

A dense confusion matrix of 21,841 classes is 477 million cells (3.8 GB as int64,
more as JSON): the summary route sends it only up to ``DENSE_CONFUSION_CLASSES``
classes and, for any number, the most frequent confusions; the confusion route pages
through the cells that hold images. Each answer here is checked against numpy
(``np.unique`` over the (label, prediction) pairs), for its size and for the memory
its request allocates (tracemalloc, which sees numpy's buffers).
"""

from __future__ import annotations

import json
import re
import tracemalloc

import numpy as np
import pytest
from plugin_client import plugin_client
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from deephys_lightning import read_log
from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.metadata import Record

PREFIX = "/data/plugin/deephys"
LAYER = "fc"
MANY = 21_841  # ImageNet-21k
FEW = 7
IMAGES = {"ind": 3000, "ood": 2000}
TOP_CONFUSIONS = 20  # the summary's list


def _predictions(rng, labels: np.ndarray, classes: int) -> np.ndarray:
    """Right 60 % of the time; of the rest, a third into a few classes that many labels
    fall into, so some cells hold many images and some counts tie."""
    wrong = rng.integers(0, classes, len(labels))
    crowded = rng.random(len(labels)) < 0.33
    wrong[crowded] = rng.integers(0, 3, crowded.sum())
    return np.where(rng.random(len(labels)) < 0.6, labels, wrong)


def _write(run_dir, classes: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One step of ``classes`` classes through the real writer; each set's (labels,
    predictions)."""
    rng = np.random.default_rng(seed)
    sink = EventFileSink(EventFileWriter(str(run_dir)))
    recordings, truth = {}, {}
    for name, n in IMAGES.items():
        labels = rng.integers(0, classes, n)
        labels[: n // 10] = rng.integers(3, 6, n // 10)  # a few classes with many images
        predictions = _predictions(rng, labels, classes)
        truth[name] = (labels, predictions)
        recordings[name] = DatasetRecording(
            labels=labels,
            predictions=predictions,
            activations={LAYER: np.maximum(rng.normal(size=(n, 12)), 0).astype(np.float16)},
            thumbnails=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        )
    record = Record(
        step=5,
        epoch=0,
        layers=(LAYER,),
        datasets=tuple(IMAGES),
        class_names=tuple(f"class {i}" for i in range(classes)),
        num_images=dict(IMAGES),
        top_k=4,
    )
    write_record(sink, record, recordings, log_dir=str(run_dir))
    sink.close()
    return truth


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return tmp_path_factory.mktemp("many_classes")


@pytest.fixture(scope="module")
def logs(logdir):
    truth = {
        "many": _write(logdir / "many", MANY, seed=0),
        "few": _write(logdir / "few", FEW, seed=1),
    }
    return plugin_client(logdir), truth


def _reference_cells(labels: np.ndarray, predictions: np.ndarray) -> list[tuple[int, int, int]]:
    """Every (label, prediction, count) that occurs, most images first, ties to the lower
    label, then the lower prediction: by np.unique over the pairs and Python's sort."""
    pairs, counts = np.unique(np.stack([labels, predictions], axis=1), axis=0, return_counts=True)
    cells = [(int(a), int(b), int(n)) for (a, b), n in zip(pairs, counts, strict=True)]
    return sorted(cells, key=lambda cell: (-cell[2], cell[0], cell[1]))


def _cells(answer: list[dict]) -> list[tuple[int, int, int]]:
    return [(c["label"], c["pred"], c["count"]) for c in answer]


def _get(client, route: str, **query):
    """The answer, its size in bytes and the peak of memory its request allocated."""
    tracemalloc.start()
    try:
        response = client.get(f"{PREFIX}/{route}", query_string=query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, len(response.data), peak


def test_sparse_confusion_cells_match_a_reference():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 50, 400)
    predictions = _predictions(rng, labels, 50)
    cells = derived.confusion_cells(labels, predictions, 50)
    assert [tuple(row) for row in cells.tolist()] == _reference_cells(labels, predictions)
    dense = derived.confusion_matrix(labels, predictions, 50)
    assert np.count_nonzero(dense) == len(cells)
    assert all(dense[a, b] == n for a, b, n in cells.tolist())
    assert derived.confusion_cells(np.array([], np.int64), np.array([], np.int64), 5).shape == (
        0,
        3,
    )
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 50\)"):
        derived.confusion_cells(labels, predictions + 50, 50)
    with pytest.raises(ValueError, match="same length"):
        derived.confusion_cells(labels, predictions[:-1], 50)


def test_summary_at_21841_classes_is_small_and_lists_the_top_confusions(logs):
    client, truth = logs
    response, size, peak = _get(client, "summary", run="many", layer=LAYER)
    assert response.status_code == 200, response.data[:300]
    assert size < 1_000_000, size  # 477 million cells as JSON before
    assert peak < 64 * 2**20, peak  # a dense int64 matrix alone: 3.8 GB
    body = response.json
    assert len(body["class_names"]) == MANY
    for dataset in body["datasets"]:
        labels, predictions = truth[body["run"]][dataset["name"]]
        reference = _reference_cells(labels, predictions)
        confused = [cell for cell in reference if cell[0] != cell[1]]
        assert dataset["confusion"] is None  # no dense matrix past 100 classes
        assert dataset["confused_pairs"] == len(confused)
        assert dataset["misclassified"] == int(np.sum(labels != predictions))
        assert _cells(dataset["top_confusions"]) == confused[:TOP_CONFUSIONS]
        assert dataset["top_confusions"][0]["count"] > 1  # the crowded classes
        assert dataset["accuracy"] == pytest.approx(np.mean(labels == predictions))


def test_summary_of_a_few_classes_keeps_its_dense_matrix(logs):
    client, truth = logs
    body = client.get(f"{PREFIX}/summary", query_string={"run": "few", "layer": LAYER}).json
    for dataset in body["datasets"]:
        labels, predictions = truth[body["run"]][dataset["name"]]
        matrix = np.zeros((FEW, FEW), np.int64)
        np.add.at(matrix, (labels, predictions), 1)
        assert dataset["confusion"] == matrix.tolist()
        off = [cell for cell in _reference_cells(labels, predictions) if cell[0] != cell[1]]
        assert _cells(dataset["top_confusions"]) == off[:TOP_CONFUSIONS]
        assert dataset["confused_pairs"] == len(off)
        assert dataset["misclassified"] == sum(n for _, _, n in off)


@pytest.mark.parametrize("run", ["many", "few"])
def test_confusion_route_pages_through_every_cell(logs, run):
    client, truth = logs
    labels, predictions = truth[run]["ood"]
    reference = _reference_cells(labels, predictions)
    found, page = [], 0
    while True:
        response, size, peak = _get(
            client, "confusion", run=run, dataset="ood", page=page, page_size=1000
        )
        assert response.status_code == 200, response.data[:300]
        assert size < 100_000 and peak < 32 * 2**20, (size, peak)
        body = response.json
        found += _cells(body["cells"])
        if len(found) >= body["num_cells"]:
            break
        page += 1
    assert found == reference
    assert body["num_images"] == len(labels) and body["page_size"] == 1000
    assert body["num_classes"] == (MANY if run == "many" else FEW)
    assert body["diagonal"] is True and body["label"] is None and body["pred"] is None


def test_confusion_route_filters_by_class_and_leaves_out_the_diagonal(logs):
    client, truth = logs
    labels, predictions = truth["many"]["ind"]
    reference = _reference_cells(labels, predictions)
    where = {"run": "many", "dataset": "ind", "page_size": 1000}
    off = client.get(f"{PREFIX}/confusion", query_string={**where, "diagonal": "0"}).json
    confused = [cell for cell in reference if cell[0] != cell[1]]
    assert off["num_cells"] == len(confused) and off["diagonal"] is False
    assert off["num_images"] == int(np.sum(labels != predictions))
    assert _cells(off["cells"]) == confused[:1000]
    crowded = int(np.bincount(labels).argmax())
    row = client.get(f"{PREFIX}/confusion", query_string={**where, "label": crowded}).json
    assert _cells(row["cells"]) == [cell for cell in reference if cell[0] == crowded]
    assert row["num_images"] == int(np.sum(labels == crowded)) and row["label"] == crowded
    column = client.get(f"{PREFIX}/confusion", query_string={**where, "pred": 1}).json
    assert _cells(column["cells"]) == [cell for cell in reference if cell[1] == 1]
    both = client.get(
        f"{PREFIX}/confusion", query_string={**where, "label": crowded, "pred": crowded}
    ).json
    assert _cells(both["cells"]) == [cell for cell in reference if cell[:2] == (crowded,) * 2]


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        (
            {"page": "9", "page_size": "1000"},
            400,
            r"page 9 is out of range: \d pages of 1000 cells",
        ),
        ({"page": "-1"}, 400, "page -1 is out of range"),
        ({"page_size": "0"}, 400, r"'page_size' must be in \[1, 1000\], got 0"),
        ({"page_size": "1001"}, 400, r"'page_size' must be in \[1, 1000\], got 1001"),
        ({"page": "+1"}, 400, "'page' must be an integer"),
        ({"label": str(MANY)}, 400, "label 21841 is out of range: there are 21841 classes"),
        ({"pred": "-1"}, 400, "pred -1 is out of range"),
        ({"diagonal": "maybe"}, 400, "'diagonal' must be 1, 0, true or false"),
        ({"dataset": "nope"}, 404, "dataset 'nope' was not recorded"),
        ({"run": "nope"}, 404, "nope"),
        ({"dataset": ""}, 400, "missing query parameter 'dataset'"),
    ],
)
def test_confusion_route_refuses_bad_parameters_in_words(logs, query, status, error):
    client, _ = logs
    response = client.get(
        f"{PREFIX}/confusion", query_string={"run": "many", "dataset": "ood", **query}
    )
    assert response.status_code == status, response.data[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert re.search(error, json.loads(response.data)["error"]), response.data[:300]


def test_an_empty_filter_has_one_empty_page(logs):
    client, truth = logs
    labels, predictions = truth["many"]["ood"]
    absent = int(np.setdiff1d(np.arange(MANY), labels)[0])  # a class without images there
    query = {"run": "many", "dataset": "ood", "label": absent}
    body = client.get(f"{PREFIX}/confusion", query_string=query).json
    assert body["cells"] == [] and body["num_cells"] == 0 and body["num_images"] == 0
    response = client.get(f"{PREFIX}/confusion", query_string={**query, "page": 1})
    assert response.status_code == 400
    assert "the set has no cells (page 0 only, empty)" in response.json["error"]


def test_every_route_stays_bounded_at_21841_classes(logs):
    client, truth = logs
    labels, predictions = truth["many"]["ood"]
    wrong = int(np.flatnonzero(labels != predictions)[0])
    a, b = int(labels[wrong]), int(predictions[wrong])
    where = {"run": "many", "layer": LAYER}
    requests = [
        ("runs", {}),
        ("neuron", {**where, "neuron": 3}),
        ("image", {**where, "dataset": "ood", "index": wrong}),
        ("category", {**where, "dataset": "ood", "label": a}),
        ("category", {**where, "dataset": "ood", "label": a, "pred": b}),
        ("category", {**where, "dataset": "ood", "label": a, "pred": b, "either": 1}),
        ("scores_over_time", {**where, "dataset": "ood"}),
        ("thumbnail", {"run": "many", "dataset": "ood", "index": wrong}),
    ]
    for route, query in requests:
        response, size, peak = _get(client, route, **query)
        assert response.status_code == 200, (route, response.data[:300])
        # the class names (21,841 of them, ~0.3 MB) are the largest part of an answer;
        # nothing of C x C size is made
        assert size < 1_000_000 and peak < 64 * 2**20, (route, size, peak)


@pytest.mark.parametrize("n", [1, 3, 5, 16, 40])
def test_ranking_every_row_at_once_is_descending_order_row_by_row(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 6, (500, 33)).astype(np.float32)  # many ties
    values[values == 5] = np.nan
    values[0] = np.nan  # a category without images
    values[1] = 0.0  # a row of ties
    values[2, 3], values[2, 9], values[3, 0] = -np.inf, np.inf, -np.inf
    values[4, :30] = np.nan  # fewer numbers than places
    values[5, :] = np.nan  # no number at all
    values[6, 2], values[6, 4] = -0.0, 0.0  # equal, as in a sort
    values[7, :n] = 9.0  # exactly n at the top
    for block_elements in (1, 100, 1 << 22):  # one row a block, several, all
        ranked = derived.rank_rows(values, n, block_elements=block_elements)
        for row, found, kept in zip(values, ranked.order, ranked.values, strict=True):
            expected = derived.descending_order(row, n)
            np.testing.assert_array_equal(found, expected)
            np.testing.assert_array_equal(kept, row[expected])
    scale = rng.random(33).astype(np.float32) + 0.5
    prepared = derived.rank_rows(values, n, lambda rows: rows / scale)
    for row, found in zip(values, prepared.order, strict=True):
        np.testing.assert_array_equal(found, derived.descending_order(row / scale, n))
    assert derived.rank_rows(values[:0], n).order.shape == (0, min(n, 33))
    assert derived.rank_rows(values, 0).order.shape == (500, 0)


@pytest.mark.parametrize("run", ["many", "few"])
def test_top_categories_and_category_neurons_match_the_category_means(logs, logdir, run):
    """The neuron route's top categories and the category route's neurons come from
    tables ranked once per step, never from the [C, M] means per request: they are
    what ranking the stored means one neuron or one class at a time gives."""
    client, _ = logs
    log = read_log(logdir / run)
    ind_max = log.maxima(LAYER, "ind")
    for dataset in IMAGES:
        means = log.category_means(LAYER, dataset)
        for neuron in (0, 5, 11):
            query = {"run": run, "layer": LAYER, "neuron": neuron}
            answer = client.get(f"{PREFIX}/neuron", query_string=query).json
            (entry,) = [d for d in answer["datasets"] if d["name"] == dataset]
            column = means[:, neuron]
            order = derived.descending_order(column)
            expected = order[np.isfinite(column[order])][:5]
            assert [c["label"] for c in entry["top_categories"]] == expected.tolist()
            assert [c["mean"] for c in entry["top_categories"]] == pytest.approx(
                column[expected].tolist()
            )
        for label in np.flatnonzero(np.isfinite(means[:, 0]))[:3].tolist() + [0]:
            query = {"run": run, "layer": LAYER, "dataset": dataset, "label": label}
            answer = client.get(f"{PREFIX}/category", query_string=query).json
            normalized = derived.normalize(means[label], ind_max)
            expected = derived.descending_order(normalized, 16)
            assert [n["neuron"] for n in answer["neurons"]] == expected.tolist()
            values = [
                None if np.isnan(v) else pytest.approx(float(v)) for v in normalized[expected]
            ]
            assert [n["mean"] for n in answer["neurons"]] == values


def test_the_category_means_are_read_once_per_set_even_past_the_cache(logs, logdir, monkeypatch):
    """A neuron answer ranks each set's [C, M] means once; later answers read the small
    ranked tables, also when the reader's cache cannot hold the means (four sets of
    21,841 x 2,048 means are 716 MB, the cache 512 MB): no re-read per request."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from tensorboard_plugin_deephys.deephys_plugin import DeephysPlugin
    from tensorboard_plugin_deephys.log.metadata import Kind
    from tensorboard_plugin_deephys.log.records import DeephysReader

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(data_provider=provider, logdir=str(logdir))
    means_bytes = MANY * 12 * 4
    plugin = DeephysPlugin(context, cache_bytes=means_bytes - 1)  # never kept
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider))
    reads = []
    original = DeephysReader.array

    def counted(self, ctx, experiment_id, run, kind, **where):
        if kind is Kind.CATEGORY_MEANS:
            reads.append((run, where.get("dataset")))
        return original(self, ctx, experiment_id, run, kind, **where)

    monkeypatch.setattr(DeephysReader, "array", counted)
    for neuron in range(6):
        query = {"run": "many", "layer": LAYER, "neuron": neuron}
        assert client.get(f"{PREFIX}/neuron", query_string=query).status_code == 200
    assert sorted(reads) == [("many", "ind"), ("many", "ood")]
    reads.clear()
    for label in range(6):
        query = {"run": "many", "layer": LAYER, "dataset": "ood", "label": label}
        assert client.get(f"{PREFIX}/category", query_string=query).status_code == 200
    assert reads == [("many", "ood")]  # the other ranking of the same means, once
