"""What pushed a prediction, as the routes serve it: the image route's top
contributions and margin, the neuron route's zeroing effect and a confusion set's top
mean contributions, each against the recorded head applied by hand in NumPy; and a
layer without a linear head that says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plugin_client import plugin_client
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log

PREFIX = "/data/plugin/deephys"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pushes")
    torch.manual_seed(0)
    val = {"ind": loader(random_set(24, 1)), "ood": loader(random_set(24, 2))}
    t = trainer(tmp_path, [DeephysCallback(layers=["fc", "features.0"])], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    client = plugin_client(t.logger.log_dir)
    run = client.get(f"{PREFIX}/runs").json["runs"][0]["run"]
    return log, client, run


def _by_hand(log, dataset):
    """Each image's contributions a_j W[c, j] to every class, and its logits, from
    the recorded activations and head, in float64."""
    head = log.head("fc")
    acts = log.activations("fc", dataset).astype(np.float64)
    weight, bias = head.weight.astype(np.float64), head.bias.astype(np.float64)
    return acts[:, None, :] * weight[None], acts @ weight.T + bias


def test_the_image_route_lists_what_pushed_the_prediction(fitted):
    log, client, run = fitted
    pushes, logits = _by_hand(log, "ood")
    labels, predictions = log.labels("ood"), log.predictions("ood")
    for index in range(6):
        body = client.get(f"{PREFIX}/image?run={run}&layer=fc&dataset=ood&index={index}&n=3").json[
            "pushes"
        ]
        assert body["available"] is True
        p, y = predictions[index], labels[index]
        towards_p = pushes[index, p]
        expected = sorted(range(len(towards_p)), key=lambda j: (-towards_p[j], j))[:3]
        assert [row["neuron"] for row in body["predicted"]] == expected
        for row in body["predicted"]:
            assert row["value"] == pytest.approx(towards_p[row["neuron"]], abs=1e-5)
        assert [row["neuron"] for row in body["label"]][:1] == [int(np.argmax(pushes[index, y]))]
        assert body["margin"] == pytest.approx(logits[index, p] - logits[index, y], abs=1e-4)


def test_the_neuron_route_says_what_zeroing_it_does(fitted):
    log, client, run = fitted
    _, logits = _by_hand(log, "ind")
    acts = log.activations("fc", "ind").astype(np.float64)
    head = log.head("fc")
    base = logits.argmax(1)
    for neuron in range(acts.shape[1]):
        body = client.get(f"{PREFIX}/neuron?run={run}&layer=fc&neuron={neuron}").json
        zeroing = next(d for d in body["datasets"] if d["name"] == "ind")["zeroing"]
        moved = logits - acts[:, neuron : neuron + 1] * head.weight[:, neuron].astype(np.float64)
        assert zeroing["changed"] == int((moved.argmax(1) != base).sum())
        expected = float((moved.argmax(1) == log.labels("ind")).mean())
        assert zeroing["accuracy"] == pytest.approx(expected, abs=1e-6)
        assert zeroing["images"] == 24


def test_a_confusion_set_lists_the_neurons_that_pushed_it(fitted):
    log, client, run = fitted
    labels, predictions = log.labels("ood"), log.predictions("ood")
    wrong = np.flatnonzero(labels != predictions)
    a, b = int(labels[wrong[0]]), int(predictions[wrong[0]])
    body = client.get(f"{PREFIX}/category?run={run}&layer=fc&dataset=ood&label={a}&pred={b}").json
    members = (labels == a) & (predictions == b)
    head = log.head("fc")
    mean = log.activations("fc", "ood")[members].astype(np.float64).mean(0)
    push = mean * (head.weight[b].astype(np.float64) - head.weight[a])
    expected = sorted(range(len(push)), key=lambda j: (-push[j], j))
    assert [row["neuron"] for row in body["pushes"]["neurons"]] == expected
    category = client.get(f"{PREFIX}/category?run={run}&layer=fc&dataset=ood&label={a}").json
    assert category["pushes"] is None  # a category, not a confusion set


def test_a_layer_without_a_linear_head_says_why(fitted):
    _, client, run = fitted
    body = client.get(f"{PREFIX}/image?run={run}&layer=features.0&dataset=ind&index=0").json
    assert body["pushes"]["available"] is False
    assert "feeds no linear head" in body["pushes"]["why"]
    neuron = client.get(f"{PREFIX}/neuron?run={run}&layer=features.0&neuron=0").json
    assert all(d["zeroing"] is None for d in neuron["datasets"])
