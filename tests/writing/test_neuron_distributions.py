"""What the neuron view shows beyond the top images: each neuron's activation
histogram over a range every dataset shares, the fraction of images it fires on,
its lowest images and examples of each activation band, precomputed at write time
and served by the neuron route; every number against a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from event_surgery import rewrite_events, sink_without, tamper
from plugin_client import plugin_client
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, metrics, read_log
from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log import array_checks, metadata
from tensorboard_plugin_deephys.log.metadata import Kind, Record

PREFIX = "/data/plugin/deephys"
BINS, BANDS, PER_BAND = metadata.HISTOGRAM_BINS, metadata.INTERVAL_BANDS, metadata.INTERVAL_IMAGES
NEW_KINDS = metadata.DISTRIBUTION_KINDS
FIELDS = ("fire_fraction", "distribution", "bottom_images", "intervals")


# -- the slow reference: loops per neuron -------------------------------------------


def _reference(
    acts: dict[str, np.ndarray], k: int, *, finite_rows: bool = False
) -> dict[str, list[dict]]:
    """Per dataset and neuron, by loops over the float16 activations: the fraction of
    images above 0, the histogram over the shared range (``np.histogram``), the ``k``
    lowest images (a sorted list) and the images of each band (a loop).

    ``finite_rows``: as a record has them, of the images whose activations are all
    finite (the others are left out of the layer, indices still into the whole set);
    else of every image, as the kernels compute them on what they are given.
    """
    kept_rows = {
        name: [i for i in range(len(a)) if not finite_rows or np.isfinite(a[i].astype(float)).all()]
        for name, a in acts.items()
    }
    m = next(iter(acts.values())).shape[1]
    ranges = []
    for j in range(m):
        finite = [
            float(a[i, j])
            for name, a in acts.items()
            for i in kept_rows[name]
            if math.isfinite(float(a[i, j]))
        ]
        low = min([0.0, *finite])
        high = max(finite) if finite else -math.inf
        ranges.append((low, high if high > low else low + 1))
    out = {}
    for name, a in acts.items():
        out[name] = []
        kept = kept_rows[name]
        for j in range(m):
            values = [float(x) for x in a[:, j].tolist()]
            column = {i: values[i] for i in kept}  # image index -> activation
            low, high = (float(np.float32(v)) for v in ranges[j])
            counts, edges = np.histogram(
                np.array(list(column.values())), bins=BINS, range=(low, high)
            )
            nan_last = sorted(
                column,
                key=lambda i: (
                    math.isnan(column[i]),
                    0.0 if math.isnan(column[i]) else column[i],
                    i,
                ),
            )
            # NaN if one is
            maximum = float(np.max([column[i] for i in kept])) if kept else math.nan
            out[name].append(
                {
                    "fire_fraction": sum(x > 0 for x in column.values()) / len(column)
                    if column
                    else None,
                    "edges": edges.tolist(),
                    "counts": counts.tolist(),
                    "bottom": nan_last[:k],
                    "values": values,
                    "kept": len(kept),
                    "intervals": _bands(column, maximum),
                    "maximum": maximum,
                }
            )
    return out


def _bands(column: dict[int, float], maximum: float) -> list[tuple[float, float, list[int]]]:
    if not (math.isfinite(maximum) and maximum > 0):
        return []
    edges = [maximum * j / BANDS for j in range(BANDS + 1)]
    bands = []
    for band in range(BANDS - 1, -1, -1):  # highest first
        low, high = edges[band], edges[band + 1]
        members = [i for i, x in column.items() if low < x <= high]
        members.sort(key=lambda i: (-column[i], i))
        shown = min(PER_BAND, len(members))
        picked = [members[(2 * s + 1) * len(members) // (2 * shown)] for s in range(shown)]
        bands.append((low, high, picked))
    return bands


def _json_value(x: float):
    return x if math.isfinite(x) else None


def _check_images(got: list[dict], indices: list[int], ref: dict, labels, preds, ind_max):
    assert [image["index"] for image in got] == indices
    for image in got:
        value = ref["values"][image["index"]]
        assert image["activation"] == _json_value(value)
        assert image["label"] == labels[image["index"]]
        assert image["prediction"] == preds[image["index"]]
        if math.isfinite(ind_max) and ind_max > 0 and math.isfinite(value):
            assert image["normalized"] == pytest.approx(value / ind_max, rel=1e-6)
        else:
            assert image["normalized"] is None


def _check_route(client, run: str, layer: str, acts, labels, preds, k: int) -> None:
    """The neuron route of every neuron of ``layer`` against the reference."""
    reference = _reference(acts, k, finite_rows=True)
    ind = next(iter(acts))
    for neuron in range(next(iter(acts.values())).shape[1]):
        response = client.get(f"{PREFIX}/neuron?run={run}&layer={layer}&neuron={neuron}")
        assert response.status_code == 200, response.json
        entries = response.json["datasets"]
        assert [entry["name"] for entry in entries] == list(acts)
        ind_max = reference[ind][neuron]["maximum"]
        for entry in entries:
            ref = reference[entry["name"]][neuron]
            if ref["fire_fraction"] is None:
                assert entry["fire_fraction"] is None
            else:
                assert entry["fire_fraction"] == pytest.approx(ref["fire_fraction"], rel=1e-6)
            assert entry["distribution"] == {"edges": ref["edges"], "counts": ref["counts"]}
            # one range per neuron: the same edges for every dataset
            assert entry["distribution"]["edges"] == entries[0]["distribution"]["edges"]
            expected_k = min(k, ref["kept"])
            assert len(entry["bottom_images"]) == expected_k
            args = (labels[entry["name"]], preds[entry["name"]], ind_max)
            _check_images(entry["bottom_images"], ref["bottom"], ref, *args)
            assert len(entry["intervals"]) == len(ref["intervals"])
            for got, (low, high, picked) in zip(entry["intervals"], ref["intervals"], strict=True):
                assert (got["low"], got["high"]) == (low, high)
                _check_images(got["images"], picked, ref, *args)


# -- direct writes of crafted data --------------------------------------------------


def _crafted(n: int, seed: int) -> np.ndarray:
    """float16 [n, 7]: ties on histogram edges, an all-zero neuron, NaN, negative values,
    a constant, infinities and an all-negative neuron."""
    rng = np.random.default_rng(seed)
    acts = np.zeros((n, 7), dtype=np.float32)
    acts[:, 0] = rng.integers(0, 9, n) * 0.25  # on the edges of 2 / 32 wide bins, tied
    # acts[:, 1] stays 0: a neuron that never fires anywhere
    acts[:, 2] = np.maximum(rng.normal(size=n), 0)
    acts[:, 3] = rng.normal(scale=3.0, size=n)  # negative too: range [min, max]
    acts[:, 4] = np.maximum(rng.normal(size=n), 0)
    acts[:, 5] = rng.uniform(0, 4, n)
    acts[:, 6] = -2.0  # never above 0, constant: range [-2, -1]
    return acts.astype(np.float16)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """One record written directly: InD, an OOD set, and a set of 3 images (< k)."""
    root = tmp_path_factory.mktemp("crafted")
    k = 5
    sizes = {"ind": 40, "ood": 25, "few": 3}
    acts = {name: _crafted(n, seed) for seed, (name, n) in enumerate(sizes.items())}
    acts["ind"][7, 2] = np.nan  # NaN on InD: image 7 is left out of the layer
    acts["ind"][:, 4] = 1.5  # constant on InD: every image in the top band
    acts["ood"][3, 5] = np.inf  # infinities: images 3 and 4 are left out of the layer
    acts["ood"][4, 5] = -np.inf
    acts["ood"][5, 5] = -0.0
    rng = np.random.default_rng(9)
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 3, n),
            predictions=rng.integers(0, 3, n),
            activations={"fc": acts[name]},
        )
        for name, n in sizes.items()
    }
    record = Record(
        step=4,
        epoch=0,
        layers=("fc",),
        datasets=tuple(sizes),
        class_names=("a", "b", "c"),
        num_images=sizes,
        top_k=k,
    )
    sink = EventFileSink(EventFileWriter(str(root / "run")))
    write_record(sink, record, recordings, log_dir=str(root / "run"))
    sink.close()
    labels = {name: r.labels.tolist() for name, r in recordings.items()}
    preds = {name: r.predictions.tolist() for name, r in recordings.items()}
    return root, acts, labels, preds, k


def test_the_neuron_route_serves_every_number_of_the_reference(crafted):
    root, acts, labels, preds, k = crafted
    _check_route(plugin_client(root), "run", "fc", acts, labels, preds, k)


def _by_dataset(client, neuron: int, query: str = "") -> dict[str, dict]:
    body = client.get(f"{PREFIX}/neuron?run=run&layer=fc&neuron={neuron}{query}").json
    return {entry["name"]: entry for entry in body["datasets"]}


def test_the_edge_cases_read_as_documented(crafted):
    root, acts, *_ = crafted
    client = plugin_client(root)
    left_out = {"ind": 1, "ood": 2, "few": 0}  # images with a NaN or an infinity
    for name, entry in _by_dataset(client, 1).items():  # all zero: [0, 1], all in bin 0
        n = len(acts[name]) - left_out[name]
        assert entry["distribution"]["edges"][::BINS] == [0.0, 1.0]
        assert entry["distribution"]["counts"] == [n] + [0] * (BINS - 1)
        assert entry["fire_fraction"] == 0.0 and entry["intervals"] == []
        assert [i["activation"] for i in entry["bottom_images"]] == [0.0] * min(5, n)
    nan = _by_dataset(client, 2)
    assert sum(nan["ind"]["distribution"]["counts"]) == 39  # image 7 (a NaN) left out
    assert len(nan["ind"]["intervals"]) == BANDS and nan["ind"]["max"] is not None
    assert len(nan["ood"]["intervals"]) == BANDS
    assert 7 not in [i["index"] for i in nan["ind"]["bottom_images"]]
    assert [row["images"] for row in nan["ind"]["left_out"]] == [1]
    negative = _by_dataset(client, 6)["ind"]
    assert negative["distribution"]["edges"][::BINS] == [-2.0, -1.0]
    assert negative["fire_fraction"] == 0.0 and negative["intervals"] == []
    infinite = _by_dataset(client, 5)["ood"]
    assert len(infinite["intervals"]) == BANDS and sum(infinite["distribution"]["counts"]) == 23
    assert infinite["bottom_images"][0]["index"] == 5  # -0.0 first; 3 and 4 left out
    assert infinite["fire_fraction"] == pytest.approx(22 / 23)  # -0 does not fire
    asked = _by_dataset(client, 0, "&k=2")
    assert [len(e["bottom_images"]) for e in asked.values()] == [2, 2, 2]
    full = _by_dataset(client, 0)
    assert [len(e["bottom_images"]) for e in full.values()] == [5, 5, 3]  # "few" has 3 < k


def test_the_stored_arrays_have_the_documented_kinds_shapes_and_dtypes(crafted):
    root, acts, *_ = crafted
    data = read_log(root / "run").at()
    m = 7
    for name, a in acts.items():
        n = len(a)
        shapes = {
            Kind.BOTTOM_INDICES: ((m, min(5, n)), np.int32),
            Kind.BOTTOM_VALUES: ((m, min(5, n)), np.float32),
            Kind.ACTIVATION_COUNTS: ((m, BINS), np.int32),
            Kind.FIRE_FRACTION: ((m,), np.float32),
            Kind.INTERVAL_INDICES: ((m, BANDS, PER_BAND), np.int32),
            Kind.INTERVAL_VALUES: ((m, BANDS, PER_BAND), np.float32),
        }
        for kind, (shape, dtype) in shapes.items():
            array = data.array(kind, "fc", name)
            assert (array.shape, array.dtype) == (shape, dtype), kind
        # written once per layer, with the InD set's arrays
        assert (data.optional_array(Kind.HISTOGRAM_RANGE, "fc", name) is None) == (name != "ind")
    value_range = data.array(Kind.HISTOGRAM_RANGE, "fc", "ind")
    assert value_range.shape == (m, 2) and value_range.dtype == np.float32


# -- the kernels against the reference, on random data ------------------------------


def _random_matrix(rng, n: int, m: int) -> np.ndarray:
    choices = np.array([0, 0, 0, 0.5, 1, 1.5, 2, 3.25, -1, np.nan, np.inf, -np.inf, -0.0])
    if rng.random() < 0.5:
        return rng.choice(choices, size=(n, m)).astype(np.float16)
    return (np.maximum(rng.normal(size=(n, m)), 0) * (rng.random((n, m)) > 0.4)).astype(np.float16)


@pytest.mark.parametrize("seed", range(12))
def test_the_kernels_equal_the_reference_with_ties_nan_and_infinities(seed):
    rng = np.random.default_rng(seed)
    n, m, k = int(rng.integers(0, 70)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    acts = {"a": _random_matrix(rng, n, m), "b": _random_matrix(rng, int(rng.integers(1, 9)), m)}
    value_range = metrics.histogram_range(list(acts.values()))
    # The range from the statistics pass (its maxima and minima) is the same range.
    statistics = [metrics.dataset_statistics(a, np.zeros(len(a), int), 1) for a in acts.values()]
    np.testing.assert_array_equal(
        metrics.histogram_range(list(acts.values()), statistics), value_range
    )
    reference = _reference(acts, k)
    for name, a in acts.items():
        found = metrics.neuron_distributions(
            a,
            value_range,
            metrics.max_per_neuron(a),
            k=k,
            bins=BINS,
            bands=BANDS,
            per_band=PER_BAND,
        )
        for j, ref in enumerate(reference[name]):
            assert found.counts[j].tolist() == ref["counts"]
            if ref["fire_fraction"] is None:
                assert np.isnan(found.fire_fraction[j])
            else:
                assert found.fire_fraction[j] == np.float32(ref["fire_fraction"])
            assert found.bottom_indices[j].tolist() == ref["bottom"]
            expected = np.full((BANDS, PER_BAND), -1)
            for band, (_, _, picked) in enumerate(ref["intervals"]):
                expected[band, : len(picked)] = picked
            assert found.interval_indices[j].tolist() == expected.tolist()
            values = [[float(a[i, j]) if i >= 0 else np.nan for i in row] for row in expected]
            np.testing.assert_array_equal(found.interval_values[j], values)


@pytest.mark.parametrize("seed", range(6))
def test_bottom_k_is_the_rule_of_top_k_on_the_negated_activations(seed):
    rng = np.random.default_rng(100 + seed)
    acts = _random_matrix(rng, int(rng.integers(1, 300)), 130)  # more than a column block
    for k in (1, 7, 400):
        indices, values = metrics.bottom_k(acts, k)
        top_indices, top_values = metrics.top_k(-acts.astype(np.float32), k)
        np.testing.assert_array_equal(indices, top_indices)
        np.testing.assert_array_equal(values, -top_values)


def test_the_histogram_range_is_shared_finite_and_never_empty():
    ind = np.array([[0, 0, 1, -3, np.nan, np.inf], [0, 2, 1, 4, np.nan, 5]], np.float16)
    ood = np.array([[0, 6, 1, -1, np.nan, -np.inf]], np.float16)
    expected = np.array([[0, 1], [0, 6], [0, 1], [-3, 4], [0, 1], [0, 5]], np.float32)
    np.testing.assert_array_equal(metrics.histogram_range([ind, ood]), expected)
    statistics = [metrics.dataset_statistics(a, np.zeros(len(a), int), 1) for a in (ind, ood)]
    np.testing.assert_array_equal(metrics.histogram_range([ind, ood], statistics), expected)
    with pytest.raises(ValueError, match="one entry per dataset"):
        metrics.histogram_range([ind, ood], statistics[:1])
    with pytest.raises(ValueError, match="each dataset's own dataset_statistics"):
        metrics.histogram_range([ind[:, :2]], statistics[:1])
    constant = np.full((4, 1), -2.5, np.float16)
    np.testing.assert_array_equal(metrics.histogram_range([constant]), [[-2.5, -1.5]])
    with pytest.raises(ValueError, match="at least one dataset"):
        metrics.histogram_range([])


def test_interval_slots_may_be_empty_but_not_out_of_range():
    good = np.array([[[3, -1]]], np.int32)
    assert array_checks.problem(Kind.INTERVAL_INDICES, good, {"N": 4, "M": 1}) is None
    assert "[-1, 4)" in array_checks.problem(Kind.INTERVAL_INDICES, good - 2, {"N": 4})
    assert "[-1, 4)" in array_checks.problem(Kind.INTERVAL_INDICES, good + 1, {"N": 4})
    assert "[0, 4)" in array_checks.problem(Kind.BOTTOM_INDICES, good[0] - 2, {"N": 4})
    counts = np.array([[1, -1]], np.int32)
    assert "counts must be >= 0" in array_checks.problem(Kind.ACTIVATION_COUNTS, counts, {})
    assert "integer counts" in array_checks.problem(Kind.ACTIVATION_COUNTS, counts * 0.5, {})


# -- real Trainer runs -------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two fits of the tiny model, every matrix written: ReLU'd layers (many exact zeros)
    and a layer kept signed (``relu=False``); one OOD set has fewer images than k."""
    logdir = tmp_path_factory.mktemp("fitted")
    val = {"ind": random_set(30, 1), "noise": random_set(20, 2), "few": random_set(5, 3)}
    for layers, relu in ((["fc", "features"], True), (["features"], False)):
        torch.manual_seed(0)
        callback = DeephysCallback(layers=layers, top_k=8, relu=relu, max_activation_bytes=None)
        t = trainer(logdir, [callback], max_epochs=1)
        t.fit(
            TinyNet(),
            loader(random_set(12, 0)),
            val_dataloaders={name: loader(ds) for name, ds in val.items()},
        )
    return logdir


@pytest.mark.parametrize(("version", "layer"), [(0, "fc"), (0, "features"), (1, "features")])
def test_a_real_run_serves_the_reference_numbers(fitted, version, layer):
    log = read_log(fitted / "tiny" / f"version_{version}")
    acts = {name: log.activations(layer, name) for name in log.datasets}
    labels = {name: log.labels(name).tolist() for name in log.datasets}
    preds = {name: log.predictions(name).tolist() for name in log.datasets}
    if version == 1:
        assert min(float(a.min()) for a in acts.values()) < 0  # signed: a range below 0
    else:
        assert all((a >= 0).all() for a in acts.values())
    _check_route(plugin_client(fitted), f"tiny/version_{version}", layer, acts, labels, preds, 8)


# -- old and damaged logs ------------------------------------------------------------


OlderLogSink = sink_without(NEW_KINDS)


def _small_record(tmp_path, sink_type) -> None:
    rng = np.random.default_rng(3)
    sizes = {"ind": 12, "ood": 9}
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 2, n),
            predictions=rng.integers(0, 2, n),
            activations={"fc": np.maximum(rng.normal(size=(n, 4)), 0).astype(np.float16)},
        )
        for name, n in sizes.items()
    }
    record = Record(
        step=2,
        epoch=0,
        layers=("fc",),
        datasets=tuple(sizes),
        class_names=("a", "b"),
        num_images=sizes,
        top_k=3,
    )
    sink = sink_type(EventFileWriter(str(tmp_path)))
    write_record(sink, record, recordings, log_dir=str(tmp_path), layout="events")
    sink.close()


def test_an_old_log_answers_null_for_each_field(tmp_path):
    _small_record(tmp_path / "old", OlderLogSink)
    assert read_log(tmp_path / "old").missing() == ()  # a complete record of its time
    response = plugin_client(tmp_path).get(f"{PREFIX}/neuron?run=old&layer=fc&neuron=1")
    assert response.status_code == 200, response.json
    for entry in response.json["datasets"]:
        assert {field: entry[field] for field in FIELDS} == dict.fromkeys(FIELDS)
        assert len(entry["images"]) == 3  # the rest as before


def test_damaged_interval_examples_answer_null_for_that_field_only(tmp_path):
    _small_record(tmp_path / "run", EventFileSink)
    tag = metadata.tag_name(Kind.INTERVAL_INDICES, layer="fc", dataset="ood")
    rewrite_events(tmp_path / "run", tmp_path / "bad", tamper(tag, 2, lambda a: a + 100))
    body = plugin_client(tmp_path).get(f"{PREFIX}/neuron?run=bad&layer=fc&neuron=0").json
    entries = {entry["name"]: entry for entry in body["datasets"]}
    assert entries["ood"]["intervals"] is None
    assert entries["ood"]["distribution"] is not None and entries["ind"]["intervals"] is not None
