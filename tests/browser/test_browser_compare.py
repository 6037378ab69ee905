"""Comparing two records in the tab, in a real headless Chromium against a live
tensorboard: two recorded steps of one fit side by side in the neuron view (B's values
those of the neuron route for B), both sets of cards and B − A in the overview's neuron
table (the summary route's for B), the URL keeping the comparison and a reopened URL
restoring it; a run of another layer width refused with the compare route's words."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests
import torch
from browser_tab import ARTIFACTS, open_tab, running_browser, skip_without_chromium
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard_process import running_tensorboard
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback

skip_without_chromium()

API = "/data/plugin/deephys"


class WideNet(TinyNet):
    """TinyNet with 7 neurons in ``fc`` instead of 5."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 7)
        self.head = nn.Linear(7, NUM_CLASSES)


def _fit(root, name, model, epochs):
    logger = TensorBoardLogger(str(root), name=name)
    t = trainer(root, [DeephysCallback(layer="fc")], logger=logger, max_epochs=epochs)
    data = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    t.fit(model, loader(random_set(8, 0)), val_dataloaders=data)


def _get(base, route, **params):
    response = requests.get(f"{base}{API}/{route}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _number(text):
    return None if text in (None, "null", "undefined") else float(text)


def test_two_steps_compare_side_by_side_and_the_url_keeps_it(tmp_path):
    torch.manual_seed(0)
    _fit(tmp_path, "tiny", TinyNet(), epochs=2)
    _fit(tmp_path, "wide", WideNet(), epochs=1)
    with (
        running_browser() as browser,
        running_tensorboard(tmp_path, load_fast=False, runs=2) as base,
    ):
        runs = {r["run"].split("/")[0]: r for r in _get(base, "runs")["runs"]}
        run = runs["tiny"]["run"]
        first, last = (s["step"] for s in runs["tiny"]["steps"])
        neuron = next(  # one that fires on every set at both steps: B's tiles are shown
            n
            for n in range(5)
            if all(
                d["fires"]
                for step in (first, last)
                for d in _get(base, "neuron", run=run, layer="fc", neuron=n, step=step)["datasets"]
            )
        )
        url = (
            f"{base}/#deephys&p.deephys.run={quote(run, safe='')}&p.deephys.layer=fc"
            f"&p.deephys.step={first}&p.deephys.view=neuron&p.deephys.neuron={neuron}"
        )
        page, frame, errors = open_tab(browser, base, url=url, ready=".neuron-view")
        frame.locator("#compare-select").select_option(f"{run}@{last}")
        frame.locator('.neuron-view .column[data-side="b"]').first.wait_for()

        # the neuron view: per set, A's column then B's, each labelled with run and step
        banner = frame.locator(".compare-banner").text_content()
        assert f"A: run {run}, step {first}" in banner and f"B: run {run}, step {last}" in banner
        assert "matched by neuron index" in banner
        b_body = _get(base, "neuron", run=run, layer="fc", neuron=neuron, step=last)
        a_body = _get(base, "neuron", run=run, layer="fc", neuron=neuron, step=first)
        checked = 0  # B's tiles checked against the route
        for a_set, b_set in zip(a_body["datasets"], b_body["datasets"], strict=True):
            pair = frame.locator(f'.compare-pair[data-dataset="{b_set["name"]}"]')
            for side, body, answer in (("a", a_set, a_body), ("b", b_set, b_body)):
                column = pair.locator(f'.column[data-side="{side}"]')
                label = column.locator(".side-label").text_content()
                assert (
                    label
                    == f"{side.upper()}: run {run}, step {answer['step']} (epoch {answer['epoch']})"
                )
                if body["fires"] is False:  # no top images: said instead
                    assert "Never fires on this set" in column.text_content()
                    continue
                figures = column.locator(":scope > .grid > figure")
                indices = [
                    int(i) for i in figures.evaluate_all("fs => fs.map(f => f.dataset.index)")
                ]
                assert indices == [image["index"] for image in body["images"]]
                checked += len(indices) if side == "b" else 0
                values = figures.locator(".value").all_text_contents()
                for text, image in zip(values, body["images"], strict=True):
                    if image["normalized"] is not None:
                        assert float(text.rstrip("%")) == pytest.approx(
                            image["normalized"] * 100, abs=0.051
                        )
                if body["role"] == "ood" and not answer["dead"]:
                    scores = column.locator("header .scores")
                    assert _number(scores.get_attribute("data-novelty")) == body["novelty"]
                    assert _number(scores.get_attribute("data-spurious")) == body["spurious"]
        assert checked > 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "compare-neuron.png"))
        compare_part = f"p.deephys.compare={quote(f'{run}@{last}', safe='')}"
        assert compare_part in page.url

        # the overview: A's cards then B's, and B and B − A in the neuron table
        frame.locator("#view-overview").click()
        frame.locator('.neuron-table td[data-key="ood:novelty:diff"]').first.wait_for()
        assert frame.locator('.cards[data-side="a"] .card').count() == 2
        assert frame.locator('.cards[data-side="b"] .card').count() == 2
        assert (
            frame.locator("h3.side-label.side-b")
            .text_content()
            .startswith(f"B: run {run}, step {last}")
        )
        a_sum = _get(base, "summary", run=run, layer="fc", step=first)
        b_sum = _get(base, "summary", run=run, layer="fc", step=last)
        a_scores, b_scores = a_sum["datasets"][1]["scores"], b_sum["datasets"][1]["scores"]
        rows = frame.locator(".neuron-table tr[data-neuron]")
        assert rows.count() == 5
        for r in range(rows.count()):
            row = rows.nth(r)
            i = int(row.get_attribute("data-neuron"))
            for key in ("novelty", "spurious"):
                a, b = a_scores[key][i], b_scores[key][i]
                shown_a = _number(
                    row.locator(f'td[data-key="ood:{key}"]').get_attribute("data-value")
                )
                shown_b = _number(
                    row.locator(f'td[data-key="ood:{key}:b"]').get_attribute("data-value")
                )
                diff = _number(
                    row.locator(f'td[data-key="ood:{key}:diff"]').get_attribute("data-value")
                )
                assert (shown_a, shown_b) == (a, b)
                assert diff == (None if a is None or b is None else pytest.approx(b - a, abs=1e-12))
        page.screenshot(path=str(ARTIFACTS / "compare-overview.png"), full_page=True)
        # sortable as before: by B − A
        frame.locator('.neuron-table th[data-key="ood:novelty:diff"]').click()
        assert (
            "sorted by ood novelty B − A"
            in frame.locator(".neuron-table .table-count").text_content()
        )
        assert compare_part in page.url and "p.deephys.view=overview" in page.url

        # the URL reopened in a fresh page restores the comparison
        shared, shared_frame, shared_errors = open_tab(
            browser, base, url=page.url, ready='.overview-view .cards[data-side="b"]'
        )
        assert shared_frame.locator("#compare-select").input_value() == f"{run}@{last}"
        assert shared_errors == []
        shared.close()

        # a run of another layer width: the route's words, and A alone
        wide = runs["wide"]["run"]
        wide_step = runs["wide"]["steps"][-1]["step"]
        frame.locator("#compare-select").select_option(f"{wide}@{wide_step}")
        refused = frame.locator(".compare-refused")
        refused.wait_for()
        why = _get(
            base, "compare", run=run, step=first, other_run=wide, other_step=wide_step, layer="fc"
        )
        assert why["comparable"] is False
        assert why["why"] in refused.text_content()
        frame.locator(".overview-view").wait_for()
        assert frame.locator('.cards[data-side="b"]').count() == 0
        assert frame.locator('.neuron-table th[data-key="ood:novelty:b"]').count() == 0
        frame.locator("#compare-select").select_option("")  # none: no comparison in the URL
        frame.locator(".compare-refused").wait_for(state="detached")
        assert "p.deephys.compare" not in page.url
        assert errors == []
        page.close()
