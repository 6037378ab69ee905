"""The compare route through TensorBoard's WSGI app: two recorded steps of one fit
compare neuron by neuron; a run of another layer width, or of other sets, is refused
with the reason in words."""

from __future__ import annotations

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from plugin_client import plugin_client
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback

PREFIX = "/data/plugin/deephys"


class WideNet(TinyNet):
    """TinyNet with 7 neurons in ``fc`` instead of 5."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 7)
        self.head = nn.Linear(7, NUM_CLASSES)


def _fit(root, name, model, sets=("ind", "ood"), epochs=2):
    logger = TensorBoardLogger(str(root), name=name)
    t = trainer(root, [DeephysCallback(layer="fc")], logger=logger, max_epochs=epochs)
    data = {s: loader(random_set(12, seed)) for seed, s in enumerate(sets, start=1)}
    t.fit(model, loader(random_set(8, 0)), val_dataloaders=data)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    _fit(root, "tiny", TinyNet())
    _fit(root, "wide", WideNet(), epochs=1)
    _fit(root, "renamed", TinyNet(), sets=("ind", "other"), epochs=1)
    return plugin_client(root)


def _runs(client) -> dict[str, tuple[str, list[int]]]:
    body = client.get(f"{PREFIX}/runs").json
    return {
        r["run"].split("/")[0]: (r["run"], [s["step"] for s in r["steps"]]) for r in body["runs"]
    }


def _compare(client, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.get(f"{PREFIX}/compare?{query}")


def test_two_steps_of_one_run_compare_by_neuron_index(client):
    run, steps = _runs(client)["tiny"]
    assert len(steps) == 2
    response = _compare(
        client, run=run, step=steps[0], other_run=run, other_step=steps[1], layer="fc"
    )
    assert response.status_code == 200
    body = response.json
    assert body == {
        "comparable": True,
        "why": None,
        "a": {"run": run, "step": steps[0], "epoch": 0, "stage": "fit"},
        "b": {"run": run, "step": steps[1], "epoch": 1, "stage": "fit"},
        "matched_by": "neuron index",
    }


def test_steps_default_to_the_latest(client):
    run, steps = _runs(client)["tiny"]
    body = _compare(client, run=run, other_run=run, layer="fc").json
    assert body["a"]["step"] == body["b"]["step"] == steps[-1]
    assert body["comparable"] is True


def test_another_layer_width_is_refused_in_words(client):
    runs = _runs(client)
    run, _ = runs["tiny"]
    wide, _ = runs["wide"]
    body = _compare(client, run=run, other_run=wide, layer="fc").json
    assert body["comparable"] is False
    assert body["why"] == (
        f"layer 'fc' has 5 neurons in A (run {run!r} at step {body['a']['step']}) and 7 in B "
        f"(run {wide!r} at step {body['b']['step']}): neurons are matched by index, "
        "so the widths must be equal"
    )
    assert body["b"]["run"] == wide and body["matched_by"] == "neuron index"


def test_other_set_names_are_refused_in_words(client):
    runs = _runs(client)
    run, _ = runs["tiny"]
    renamed, _ = runs["renamed"]
    body = _compare(client, run=run, other_run=renamed, layer="fc").json
    assert body["comparable"] is False
    assert "the datasets differ" in body["why"]
    assert "has ind, ood" in body["why"] and "has ind, other" in body["why"]


def test_a_layer_missing_from_both_is_refused_in_words(client):
    run, _ = _runs(client)["tiny"]
    body = _compare(client, run=run, other_run=run, layer="head").json
    assert body["comparable"] is False
    assert body["why"].startswith("layer 'head' was not recorded in A")


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"other_run": "{run}", "layer": "fc"}, 400, "missing query parameter 'run'"),
        ({"run": "{run}", "layer": "fc"}, 400, "missing query parameter 'other_run'"),
        ({"run": "{run}", "other_run": "{run}"}, 400, "missing query parameter 'layer'"),
        (
            {"run": "{run}", "other_run": "{run}", "layer": "fc", "other_step": "x"},
            400,
            "'other_step' must be an integer",
        ),
        ({"run": "{run}", "other_run": "nope", "layer": "fc"}, 404, "nope"),
        ({"run": "{run}", "other_run": "{run}", "layer": "fc", "other_step": "99999"}, 404, ""),
        ({"run": "{run}", "other_run": "{run}", "layer": "fc", "step": "99999"}, 404, ""),
    ],
)
def test_bad_or_unknown_parameters_are_json_errors(client, params, status, words):
    run, _ = _runs(client)["tiny"]
    response = _compare(client, **{k: v.format(run=run) for k, v in params.items()})
    assert response.status_code == status
    assert words in response.json["error"]
