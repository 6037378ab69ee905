"""The routes say what they do not show: records TensorBoard dropped by sampling, a
neuron that does not fire on a set, and indices out of range, in one wording."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import requests
import torch
from event_surgery import to_events_layout
from plugin_client import plugin_client
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, trainer
from torch import nn
from torch.utils.data import TensorDataset

from deephys_lightning import DeephysCallback, read_log

PREFIX = "/data/plugin/deephys"
CLASSES = 7
FLAG = "--samples_per_plugin=deephys=0"


class GatedNet(TinyNet):
    """TinyNet with 7 classes and a fixed ``gate`` layer on the channel means of the
    input: neurons 0 and 1 weigh them positively (they never fire on the negative OOD
    images), neuron 2 negatively (dead on the positive InD images)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, CLASSES)
        self.gate = nn.Linear(3, 3)
        with torch.no_grad():
            self.gate.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [-1.0] * 3]))
            self.gate.bias.zero_()
        self.gate.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gate(x.mean(dim=(2, 3)))
        return super().forward(x)


def signed_set(n: int, seed: int, classes: int, sign: float) -> TensorDataset:
    """``n`` images of one sign, labelled ``0, 1, ..., classes - 1, 0, ...``."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(sign * torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % classes)


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """One recorded epoch: InD has all 7 classes, OOD (negative images) only 0-4."""
    logdir = tmp_path_factory.mktemp("gated")
    t = trainer(logdir, [DeephysCallback(layers=["gate", "fc"])], max_epochs=1)
    val = {"ind": signed_set(28, 1, CLASSES, 1.0), "ood": signed_set(20, 2, 5, -1.0)}
    t.fit(
        GatedNet(),
        loader(signed_set(21, 0, CLASSES, 1.0)),
        val_dataloaders={name: loader(ds) for name, ds in val.items()},
    )
    return plugin_client(logdir), read_log(t.logger.log_dir)


# -- 2. whether a neuron fires on each set, and its top categories ----------------------


def _reference(log, layer: str, neuron: int) -> dict[str, dict]:
    """Per dataset, by loops over the logged activations: the neuron's maximum and its
    mean per class (classes with images only), and the InD maximum."""
    step = log.steps[-1]
    out = {}
    for dataset in log.datasets:
        column = log.activations(layer, dataset, step)[:, neuron].astype(np.float64)
        labels = log.labels(dataset, step)
        sums, counts = {}, {}
        for value, label in zip(column.tolist(), labels.tolist(), strict=True):
            sums[label] = sums.get(label, 0.0) + value
            counts[label] = counts.get(label, 0) + 1
        out[dataset] = {
            "max": max(column.tolist()),
            "means": {label: sums[label] / counts[label] for label in sums},
        }
    ind_max = out[log.datasets[0]]["max"]
    for ref in out.values():
        ref["ind_max"] = ind_max
    return out


def _check_categories(got: list[dict], ref: dict) -> None:
    means, ind_max = ref["means"], ref["ind_max"]
    assert len(got) == min(5, len(means))
    for entry in got:
        assert entry["mean"] == pytest.approx(means[entry["label"]], rel=2e-3, abs=1e-4)
        if ind_max > 0:
            assert entry["normalized"] == pytest.approx(
                means[entry["label"]] / ind_max, rel=2e-3, abs=1e-4
            )
        else:
            assert entry["normalized"] is None
    # highest first, ties to the lower label
    keys = [(-entry["mean"], entry["label"]) for entry in got]
    assert keys == sorted(keys)
    # the five highest (float16 activations: exact where the reference has no near tie)
    ranked = sorted(means, key=lambda label: (-means[label], label))
    if len(ranked) <= 5 or means[ranked[4]] - means[ranked[5]] > 1e-2:
        assert {entry["label"] for entry in got} == set(ranked[:5])


@pytest.mark.parametrize(("layer", "neurons"), [("gate", 3), ("fc", 5)])
def test_neuron_says_where_it_fires_and_its_top_categories(gated, layer, neurons):
    client, log = gated
    for neuron in range(neurons):
        body = client.get(f"{PREFIX}/neuron?run=tiny/version_0&layer={layer}&neuron={neuron}")
        assert body.status_code == 200, body.json
        reference = _reference(log, layer, neuron)
        for dataset in body.json["datasets"]:
            ref = reference[dataset["name"]]
            assert dataset["max"] == pytest.approx(ref["max"], rel=1e-3, abs=1e-6)
            assert dataset["fires"] is (ref["max"] > 0)
            _check_categories(dataset["top_categories"], ref)


def test_a_neuron_silent_on_a_set_and_one_dead_on_ind(gated):
    client, _ = gated
    sets = {}
    for neuron in range(3):
        body = client.get(f"{PREFIX}/neuron?run=tiny/version_0&layer=gate&neuron={neuron}").json
        sets[neuron] = {d["name"]: d for d in body["datasets"]}
    for neuron in (0, 1):  # fire on the positive InD images, never on the negative OOD
        assert sets[neuron]["ind"]["fires"] is True and sets[neuron]["ind"]["max"] > 0
        ood = sets[neuron]["ood"]
        assert ood["fires"] is False and ood["max"] == 0.0
        # every mean is 0: ties by label; OOD has no image of classes 5 and 6
        assert ood["top_categories"] == [
            {"label": label, "mean": 0.0, "normalized": 0.0} for label in range(5)
        ]
        assert len(sets[neuron]["ind"]["top_categories"]) == 5  # of the 7 classes
    dead = sets[2]
    assert dead["ind"]["fires"] is False and dead["ind"]["max"] == 0.0
    assert dead["ood"]["fires"] is True
    for dataset in dead.values():  # no InD maximum to normalize by
        assert all(entry["normalized"] is None for entry in dataset["top_categories"])


# -- 3. out-of-range indices, in one wording, at both ends ------------------------------

RUN = "run=tiny/version_0"
CASES = [
    # (query, message): both ends of every index-like parameter
    (
        f"neuron?{RUN}&layer=fc&neuron=-1",
        "neuron -1 is out of range: layer 'fc' has 5 neurons (0\u20134)",
    ),
    (
        f"neuron?{RUN}&layer=fc&neuron=5",
        "neuron 5 is out of range: layer 'fc' has 5 neurons (0\u20134)",
    ),
    (
        f"neuron?{RUN}&layer=fc&neuron=99999999999999999999",
        "neuron 99999999999999999999 is out of range: layer 'fc' has 5 neurons (0\u20134)",
    ),
    (
        f"scores_over_time?{RUN}&layer=gate&dataset=ood&neuron=-1",
        "neuron -1 is out of range: layer 'gate' has 3 neurons (0\u20132)",
    ),
    (
        f"scores_over_time?{RUN}&layer=gate&dataset=ood&neuron=3",
        "neuron 3 is out of range: layer 'gate' has 3 neurons (0\u20132)",
    ),
    (
        f"image?{RUN}&layer=fc&dataset=ind&index=-1",
        "image index -1 is out of range: 'ind' has 28 images (0\u201327)",
    ),
    (
        f"image?{RUN}&layer=fc&dataset=ood&index=20",
        "image index 20 is out of range: 'ood' has 20 images (0\u201319)",
    ),
    (
        f"thumbnail?{RUN}&dataset=ind&index=-3",
        "image index -3 is out of range: 'ind' has 28 images (0\u201327)",
    ),
    (
        f"thumbnail?{RUN}&dataset=ood&index=7000",
        "image index 7000 is out of range: 'ood' has 20 images (0\u201319)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=-1",
        "label -1 is out of range: there are 7 classes (0\u20136)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=7",
        "label 7 is out of range: there are 7 classes (0\u20136)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=1&pred=-2",
        "pred -2 is out of range: there are 7 classes (0\u20136)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=1&pred=12",
        "pred 12 is out of range: there are 7 classes (0\u20136)",
    ),
    # label 0 of ind: images 0, 7, 14, 21; in pages of 3, pages 0 and 1
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=0&page_size=3&page=-1",
        "page -1 is out of range: 2 pages of 3 images (0\u20131)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=0&page_size=3&page=2",
        "page 2 is out of range: 2 pages of 3 images (0\u20131)",
    ),
    (
        f"category?{RUN}&layer=fc&dataset=ind&label=0&page=1",
        "page 1 is out of range: 1 page of 50 images (0)",
    ),
    (  # OOD has no image of class 6: page 0 is its only page
        f"category?{RUN}&layer=fc&dataset=ood&label=6&page=1",
        "page 1 is out of range: the set has no images (page 0 only, empty)",
    ),
]


@pytest.mark.parametrize(("query", "message"), CASES, ids=[q for q, _ in CASES])
def test_an_index_out_of_range_is_400_in_words(gated, query, message):
    client, _ = gated
    response = client.get(f"{PREFIX}/{query}")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json["error"] == f"Invalid argument: {message}"


@pytest.mark.parametrize(
    "query",
    [
        "neuron?{run}&layer=fc&neuron=1.5",
        "scores_over_time?{run}&layer=fc&dataset=ood&neuron=x",
        "image?{run}&layer=fc&dataset=ind&index=-",
        "thumbnail?{run}&dataset=ind&index=0x1",
        "category?{run}&layer=fc&dataset=ind&label=one",
        "category?{run}&layer=fc&dataset=ind&label=1&pred=2.0",
        "category?{run}&layer=fc&dataset=ind&label=1&page=last",
    ],
)
def test_a_non_integer_index_is_400_naming_it(gated, query):
    client, _ = gated
    response = client.get(f"{PREFIX}/" + query.format(run=RUN))
    assert response.status_code == 400
    assert "must be an integer" in response.json["error"]


def test_the_first_and_last_index_are_served(gated):
    client, log = gated
    step = log.steps[-1]
    for query in (
        f"neuron?{RUN}&layer=fc&neuron=4",
        f"scores_over_time?{RUN}&layer=gate&dataset=ood&neuron=0",
        f"image?{RUN}&layer=fc&dataset=ood&index=19",
        f"thumbnail?{RUN}&dataset=ind&index=27",
        f"category?{RUN}&layer=fc&dataset=ind&label=6&pred=0",
    ):
        response = client.get(f"{PREFIX}/{query}")
        assert response.status_code in (200, 404), query  # 404: no such confusion set
        if response.status_code == 404:
            labels = log.labels("ind", step)
            preds = log.predictions("ind", step)
            assert not np.any((labels == 6) & (preds == 0))
    last = client.get(f"{PREFIX}/category?{RUN}&layer=fc&dataset=ind&label=0&page_size=3&page=1")
    assert [image["index"] for image in last.json["images"]] == [21]
    empty = client.get(f"{PREFIX}/category?{RUN}&layer=fc&dataset=ood&label=6&page=0")
    assert empty.status_code == 200
    assert empty.json["num_images"] == 0 and empty.json["images"] == []


# -- 1. records TensorBoard dropped by sampling -----------------------------------------


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    """Three runs of the tiny model: 12 recorded epochs with the accuracy scalars
    (version_0), 12 without (version_1), and 3 (version_2), in the events layout of
    logs before 0.3 (TensorBoard samples their records) under ``events/``, and as
    written (step packs) under ``packs/``."""
    root = tmp_path_factory.mktemp("sampled")
    logdir = root / "fits"
    for epochs, scalars in ((12, True), (12, False), (3, True)):
        callback = DeephysCallback(layer="fc", log_scalars=scalars, ood_detectors=())
        t = trainer(logdir, [callback], max_epochs=epochs)
        t.fit(
            TinyNet(),
            loader(signed_set(4, 0, 3, 1.0)),
            val_dataloaders={
                "ind": loader(signed_set(6, 1, 3, 1.0)),
                "ood": loader(signed_set(4, 2, 3, -1.0)),
            },
        )
    steps = {
        f"tiny/version_{v}": read_log(logdir / "tiny" / f"version_{v}").steps for v in range(3)
    }
    for run in steps:
        to_events_layout(logdir / run, root / "events" / run)
    shutil.copytree(logdir, root / "packs")
    return root, steps


def _expected_sampling(steps: dict, keep_all: bool) -> dict:
    """What the runs route should say per run, from every step read_log found."""
    if keep_all:
        return {run: None for run in steps}
    return {
        "tiny/version_0": {"kept": 10, "recorded": len(steps["tiny/version_0"]), "flag": FLAG},
        "tiny/version_1": {"kept": 10, "recorded": None, "flag": FLAG},
        "tiny/version_2": None,
    }


@pytest.mark.parametrize("keep_all", [False, True], ids=["default sampling", FLAG])
@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_runs_say_which_records_tensorboard_dropped(long_runs, load_fast, keep_all):
    root, steps = long_runs
    logdir = root / "events"
    assert [len(s) for s in steps.values()] == [12, 12, 3]
    expected = _expected_sampling(steps, keep_all)
    extra = [FLAG] if keep_all else []
    with running_tensorboard(logdir, load_fast=load_fast, extra=extra) as base:
        deadline = time.monotonic() + 60
        while True:  # until every run is loaded (the Python loader loads run by run)
            runs = requests.get(f"{base}{PREFIX}/runs", timeout=30).json()["runs"]
            got = {r["run"]: r for r in runs}
            loaded = {run: len(r["steps"]) for run, r in got.items()}
            if loaded == {run: min(len(s), 12 if keep_all else 10) for run, s in steps.items()}:
                break
            assert time.monotonic() < deadline, f"never loaded every run: {loaded}"
            time.sleep(1.0)
        time.sleep(2.5)  # past the plugin's 2 s listing cache
        runs = requests.get(f"{base}{PREFIX}/runs", timeout=30).json()["runs"]
    got = {r["run"]: r for r in runs}
    assert {run: r["sampling"] for run, r in got.items()} == expected
    for run, entry in got.items():  # the kept steps are recorded steps
        assert {s["step"] for s in entry["steps"]} <= set(steps[run])


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_every_step_of_a_pack_log_is_listed_with_default_flags(long_runs, load_fast):
    """Since 0.3 the step list comes from the step packs, not from the records
    TensorBoard kept: all 12, with no notice, without --samples_per_plugin."""
    root, steps = long_runs
    with running_tensorboard(root / "packs", load_fast=load_fast, runs=3) as base:
        deadline = time.monotonic() + 60
        while True:
            answer = requests.get(f"{base}{PREFIX}/runs", timeout=30).json()
            got = {r["run"]: r for r in answer["runs"]}
            listed = {run: tuple(s["step"] for s in r["steps"]) for run, r in got.items()}
            if listed == steps or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    assert listed == steps
    assert all(entry["sampling"] is None for entry in got.values())


def test_runs_without_dropped_records_say_null(gated):
    client, _ = gated
    (entry,) = client.get(f"{PREFIX}/runs").json["runs"]
    assert entry["sampling"] is None


# -- 4. an image's top predictions; a category's mistakes by confidence -----------------


def test_image_route_gives_the_top_predictions_as_softmax_of_the_logits(gated):
    client, log = gated
    step = log.steps[-1]
    for dataset in log.datasets:
        logits = log.logits(dataset, step).astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        for index in (0, len(logits) - 1):
            body = client.get(f"{PREFIX}/image?{RUN}&layer=fc&dataset={dataset}&index={index}").json
            top = body["top_predictions"]
            expected = sorted(range(CLASSES), key=lambda c: (-logits[index, c], c))[:5]
            assert [t["label"] for t in top] == expected
            np.testing.assert_allclose(
                [t["probability"] for t in top], probabilities[index, expected], rtol=1e-5
            )
            assert top[0]["label"] == body["prediction"]


def test_category_route_lists_false_positives_and_negatives_most_confident_first(gated):
    client, log = gated
    step = log.steps[-1]
    for dataset in log.datasets:
        labels, predictions = log.labels(dataset, step), log.predictions(dataset, step)
        logits = log.logits(dataset, step).astype(np.float64)
        confidence = 1 / np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)
        for label in range(CLASSES):
            body = client.get(
                f"{PREFIX}/category?{RUN}&layer=fc&dataset={dataset}&label={label}"
            ).json
            for key, selected in (
                ("false_positives", (predictions == label) & (labels != label)),
                ("false_negatives", (labels == label) & (predictions != label)),
            ):
                members = [int(i) for i in np.flatnonzero(selected)]
                expected = sorted(members, key=lambda i: -confidence[i])  # stable: ties by index
                listed = body[key]
                assert listed["count"] == len(members) and listed["sorted_by"] == "confidence"
                shown = [image["index"] for image in listed["images"]]
                assert len(shown) == min(24, len(members))
                np.testing.assert_allclose(
                    confidence[shown], confidence[expected[: len(shown)]], rtol=1e-5
                )
                for image in listed["images"]:
                    assert image["label"] == labels[image["index"]]
                    assert image["prediction"] == predictions[image["index"]]
                    assert image["confidence"] == pytest.approx(confidence[image["index"]], 1e-5)
        pair = client.get(f"{PREFIX}/category?{RUN}&layer=fc&dataset={dataset}&label=0&pred=1").json
        assert "false_positives" not in pair  # a confusion set has no mistakes of its own
