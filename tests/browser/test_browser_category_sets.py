"""A category across every set (issue 30, item 2), checked in a real headless Chromium
against a live tensorboard: the category view shows one column per set, InD first,
each with the InD top neurons and the share of their InD mean the set keeps, equal to
the ``category_sets`` route's, the neurons that lose most flagged in words; the false
positives page beyond their first 24, and the URL keeps the page."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from browser_tab import open_tab, running_browser, skip_without_chromium
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard_process import running_tensorboard

from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log.metadata import Record

skip_without_chromium()

SETS = ("clean", "faded", "noisy")  # InD first
CLASSES, PER_CLASS, NEURONS = 4, 30, 8
FALSE_POSITIVES = 30  # of class 0 in the InD set: two pages of 24


def _write(run_dir) -> None:
    """One step: class 0 drives neurons 0-3 on InD; the faded set loses most of neurons
    0 and 1 on it, the noisy set most of neurons 2 and 3."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    kept = {"clean": np.ones(4), "faded": [0.1, 0.2, 0.9, 0.95], "noisy": [0.9, 0.95, 0.1, 0.3]}
    recordings = {}
    for name in SETS:
        acts = rng.random((len(labels), NEURONS)) * 0.2
        acts[labels == 0, :4] += np.array([1.0, 0.9, 0.8, 0.7]) * kept[name]
        preds = labels.copy()
        if name == "clean":
            preds[np.flatnonzero(labels != 0)[:FALSE_POSITIVES]] = 0
        recordings[name] = DatasetRecording(
            labels=labels,
            predictions=preds,
            activations={"fc": acts.astype(np.float16)},
            thumbnails=rng.integers(0, 255, (len(labels), 8, 8, 3), dtype=np.uint8),
        )
    record = Record(
        step=3,
        epoch=0,
        layers=("fc",),
        datasets=SETS,
        class_names=("zero", "one", "<b>two</b>", "three"),
        num_images=dict.fromkeys(SETS, len(labels)),
        top_k=4,
    )
    sink = EventFileSink(EventFileWriter(str(run_dir)))
    write_record(sink, record, recordings, log_dir=str(run_dir))
    sink.close()


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("category_sets")
    _write(logdir / "shift")
    with running_browser() as browser, running_tensorboard(logdir, load_fast=False) as base:
        yield browser, base


def _get(base, route, **query):
    response = requests.get(f"{base}/data/plugin/deephys/{route}", params=query, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _percent(value) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def test_the_panel_shows_the_routes_kept_shares_and_flags_the_neurons_that_lose_most(tab):
    browser, base = tab
    url = (
        f"{base}/#deephys&p.deephys.run=shift&p.deephys.view=category&p.deephys.category=0::0@clean"
    )
    page, frame, errors = open_tab(browser, base, url=url, ready=".category-sets .set-column")
    body = _get(base, "category_sets", run="shift", layer="fc", label=0)
    panel = frame.locator(".category-sets")
    columns = panel.locator(".set-column")
    assert columns.evaluate_all("cs => cs.map(c => c.dataset.dataset)") == list(SETS)
    assert columns.evaluate_all("cs => cs.map(c => c.dataset.role)") == ["ind", "ood", "ood"]
    assert f"the {body['lost_marked']} InD top neurons with the lowest kept share" in (
        panel.locator(".lost-rule").text_content()
    )
    for entry in body["datasets"]:
        column = panel.locator(f'.set-column[data-dataset="{entry["name"]}"]')
        stats = column.locator(".set-stats").text_content()
        assert stats == f'accuracy on "zero": {_percent(entry["accuracy"])} of {PER_CLASS} images'
        rows = column.locator("table.kept-neurons tbody tr").evaluate_all(
            """rs => rs.map(r => ({neuron: Number(r.dataset.neuron),
                kept: r.dataset.kept === '' ? null : Number(r.dataset.kept),
                lost: r.dataset.lost === 'true', mean: r.querySelector('.mean').textContent,
                flag: r.textContent.includes('▼ loses most')}))"""
        )
        assert [r["neuron"] for r in rows] == [x["neuron"] for x in entry["ind_neurons"]]
        assert [r["kept"] for r in rows] == pytest.approx([x["kept"] for x in entry["ind_neurons"]])
        assert [r["mean"] for r in rows] == [_percent(x["mean"]) for x in entry["ind_neurons"]]
        assert [r["lost"] for r in rows] == [x["lost"] for x in entry["ind_neurons"]]
        assert [r["flag"] for r in rows] == [x["lost"] for x in entry["ind_neurons"]]  # in words
        if entry["role"] == "ood":
            kept = column.locator("table.kept-neurons td.kept").all_text_contents()
            assert kept == [_percent(x["kept"]) for x in entry["ind_neurons"]]
        shown = column.locator("figure").evaluate_all("fs => fs.map(f => Number(f.dataset.index))")
        assert shown == [i["index"] for i in entry["images"]]
    # the designed loss: faded loses neurons 0 and 1, noisy neurons 2 and 3
    lost = {
        d["name"]: {x["neuron"] for x in d["ind_neurons"] if x["lost"]} for d in body["datasets"]
    }
    assert lost["clean"] == set()
    assert {0, 1} <= lost["faded"] and {2, 3} <= lost["noisy"]
    assert all(len(marked) <= body["lost_marked"] for marked in lost.values())
    # a class name with markup is text
    frame.locator("#category-label").fill("<b>two</b>")
    frame.locator("#category-open").click()
    title = frame.locator('.category-sets[data-label="2"] h3')
    title.wait_for()
    assert title.text_content().startswith("<b>two</b> across every set")
    assert frame.locator(".category-sets h3 b").count() == 0
    assert errors == []
    page.close()


def test_the_false_positives_page_past_24_and_the_url_keeps_the_page(tab):
    browser, base = tab
    url = (
        f"{base}/#deephys&p.deephys.run=shift&p.deephys.view=category&p.deephys.category=0::0@clean"
    )
    page, frame, errors = open_tab(browser, base, url=url, ready=".mistakes.false-positives figure")
    box = frame.locator('.mistakes[data-kind="false-positives"]')
    assert f": {FALSE_POSITIVES} images" in box.locator("h3").text_content()
    assert "1–24 shown" in box.locator("h3").text_content()
    assert box.locator("figure").count() == 24
    assert box.locator(".pager span").text_content() == "page 1 of 2"
    assert box.locator(".pager .prev").is_disabled()
    box.locator(".pager .next").click()
    second = frame.locator('.mistakes[data-kind="false-positives"][data-page="1"]')
    second.wait_for()
    expected = _get(base, "category", run="shift", layer="fc", dataset="clean", label=0, fp_page=1)
    indices = second.locator("figure").evaluate_all("fs => fs.map(f => Number(f.dataset.index))")
    assert indices == [i["index"] for i in expected["false_positives"]["images"]]
    assert len(indices) == FALSE_POSITIVES - 24
    assert "25–30 shown" in second.locator("h3").text_content()
    assert second.locator(".pager .next").is_disabled()
    assert frame.locator(".category-sets .set-column").count() == len(SETS)  # still shown
    assert "fp1%40clean" in page.url  # the URL keeps the page
    restored, restored_frame, restored_errors = open_tab(
        browser, base, url=page.url, ready='.mistakes[data-kind="false-positives"][data-page="1"]'
    )
    again = restored_frame.locator(".mistakes.false-positives figure")
    assert again.evaluate_all("fs => fs.map(f => Number(f.dataset.index))") == indices
    second.locator(".pager .prev").click()
    frame.locator('.mistakes[data-kind="false-positives"][data-page="0"]').wait_for()
    assert errors == [] and restored_errors == []
    restored.close()
    page.close()
