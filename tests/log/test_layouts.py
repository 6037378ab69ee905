"""Both layouts of a log answer alike: step packs (since 0.3) and every array in the
events (before). A fit's log and the same log converted to the events layout give
the same answer on every route and through ``read_log``; the stored log of 0.2
(tests/data/logs/events_layout, written by that release) still opens everywhere."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from event_surgery import to_events_layout
from plugin_client import plugin_client
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import export_step
from deephys_lightning.scores import score_table
from tensorboard_plugin_deephys.log import step_pack

STORED = Path(__file__).parents[1] / "data" / "logs" / "events_layout"
PREFIX = "/data/plugin/deephys"
NAMES = ["ind", "ood one", "ood/two"]


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    """One fit's run in the pack layout (logs/packs) and converted (logs/events)."""
    root = tmp_path_factory.mktemp("layouts")
    torch.manual_seed(0)
    sets = [random_set(24, seed) for seed in (1, 2, 3)]
    callback = DeephysCallback(
        layers=["features.0", "fc"],
        dataset_names=NAMES,
        class_names=["zero", "one", "two"],
        top_k=4,
        thumbnail_size=8,
        logits_layer="head",
    )
    fit = trainer(root / "fit", [callback], max_epochs=2)
    fit.fit(TinyNet(), loader(random_set(16, 0)), [loader(s) for s in sets])
    run = Path(fit.logger.log_dir)
    shutil.copytree(run, root / "logs" / "packs")
    to_events_layout(run, root / "logs" / "events")
    return root / "logs"


def _urls(run: str, steps: list[int]) -> list[str]:
    urls = [f"{PREFIX}/runs"]
    for step in steps:
        for layer in ("features.0", "fc"):
            where = f"run={run}&layer={layer}&step={step}"
            urls += [
                f"{PREFIX}/summary?{where}",
                f"{PREFIX}/neuron?{where}&neuron=1",
                f"{PREFIX}/neuron?{where}&neuron=3&k=2",
                f"{PREFIX}/image?{where}&dataset=ood%20one&index=5",
                f"{PREFIX}/category?{where}&dataset=ind&label=1",
                f"{PREFIX}/category?{where}&dataset=ood%2Ftwo&label=2",
                f"{PREFIX}/scores_over_time?run={run}&layer={layer}&dataset=ood%2Ftwo",
                f"{PREFIX}/scores_over_time?run={run}&layer={layer}&dataset=ood%20one&neuron=2",
            ]
        urls.append(f"{PREFIX}/thumbnail?run={run}&dataset=ood%2Ftwo&index=3&step={step}")
    return urls


def _same_but_the_run(answer, run: str):
    """An answer with the run's name taken out, to compare two runs' answers."""
    if isinstance(answer, dict):
        return {k: _same_but_the_run(v, run) for k, v in answer.items() if v != run}
    if isinstance(answer, list):
        return [_same_but_the_run(v, run) for v in answer]
    return answer


def test_every_route_answers_alike_for_both_layouts(both_layouts):
    client = plugin_client(both_layouts)
    runs = {entry["run"]: entry for entry in client.get(f"{PREFIX}/runs").json["runs"]}
    assert set(runs) == {"packs", "events"}
    steps = [s["step"] for s in runs["packs"]["steps"]]
    assert steps == [s["step"] for s in runs["events"]["steps"]] and len(steps) == 2
    for packs_url, events_url in zip(_urls("packs", steps), _urls("events", steps), strict=True):
        packs, events = client.get(packs_url), client.get(events_url)
        assert packs.status_code == events.status_code == 200, (packs_url, packs.data[:300])
        if packs.mimetype == "application/json" and "/runs" not in packs_url:
            assert _same_but_the_run(packs.json, "packs") == _same_but_the_run(
                events.json, "events"
            ), packs_url
        elif "/runs" not in packs_url:
            assert packs.data == events.data


def test_read_log_scores_and_export_read_both_layouts_alike(both_layouts, tmp_path):
    packs, events = read_log(both_layouts / "packs"), read_log(both_layouts / "events")
    assert packs.steps == events.steps
    assert packs.record().pack and not events.record().pack
    for step in packs.steps:
        assert packs.missing(step) == events.missing(step) == ()
        for layer in packs.layers:
            for name in NAMES:
                np.testing.assert_array_equal(
                    packs.activations(layer, name, step), events.activations(layer, name, step)
                )
                np.testing.assert_array_equal(
                    packs.category_means(layer, name, step),
                    events.category_means(layer, name, step),
                )
    table_packs = score_table(both_layouts / "packs")
    table_events = score_table(both_layouts / "events")
    rows = [dataclasses.astuple(dataclasses.replace(row, run="")) for row in table_packs]
    assert rows
    np.testing.assert_equal(  # NaN equals NaN here (all neurons dead on an OOD set)
        rows, [dataclasses.astuple(dataclasses.replace(row, run="")) for row in table_events]
    )
    for layout in ("packs", "events"):
        export_step(both_layouts / layout, tmp_path / layout, layers=["fc"])
    for layout in ("packs", "events"):  # the model is named after the run
        names = sorted(p.name for p in (tmp_path / layout).iterdir())
        assert names == sorted([f"{layout}.model", "ind.test", "ood_one.test", "ood_two.test"])
    for name in ("ind.test", "ood_one.test", "ood_two.test"):
        same = (tmp_path / "packs" / name).read_bytes() == (tmp_path / "events" / name).read_bytes()
        assert same, name


def test_the_stored_log_of_0_2_opens_everywhere(tmp_path):
    """Written by deephys-lightning 0.2.0 (tests/data/README.md): no step packs."""
    run = tmp_path / "logs" / "events_layout"
    shutil.copytree(STORED, run)
    assert step_pack.list_packs(str(run)) == []
    log = read_log(run)
    assert log.steps == (2, 4, 6) and log.datasets == tuple(NAMES)
    assert not log.record().pack and log.missing() == ()
    assert log.activations("fc", "ood/two", 4).shape == (24, 5)
    client = plugin_client(tmp_path / "logs")
    for url in _urls("events_layout", list(log.steps)):
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.data[:300])
    export_step(run, tmp_path / "export", layers=["fc"])
    assert score_table(run)
