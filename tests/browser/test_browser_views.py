"""What the tab's views tell a researcher, checked in a real headless Chromium against
a live tensorboard, each number against the log itself (``read_log``) or a slow
reference (scipy's softmax, numpy loops)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import requests
import scipy.special
import torch
from browser_tab import ARTIFACTS, drawn_maps, open_tab, running_browser, skip_without_chromium
from event_surgery import to_events_layout
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback, read_log

skip_without_chromium()

LAYER = "backbone.fc1"  # the demo's recorded layer


def probability_percent(p: float) -> str:
    """The tab's probability: one decimal, more (up to 6) where one would read 100.0 %
    or 0.0 % of a probability that is neither."""
    shown = float(p) * 100
    for digits in range(1, 7):
        text = f"{shown:.{digits}f}"
        if not ((shown < 100 and float(text) >= 100) or (shown > 0 and float(text) <= 0)):
            break
    return f"{text}%"


@pytest.fixture(scope="module")
def browser():
    with running_browser() as browser:
        yield browser


@pytest.fixture(scope="module")
def demo_tab(demo_log_dir):
    with running_tensorboard(demo_log_dir[0], load_fast=False) as base:
        yield base


def _go(frame, selector, value):
    field = frame.locator(selector)
    field.fill(str(value))
    field.dispatch_event("change")


def _category_means(log, dataset, step):
    """Mean activation of each class (rows) and neuron (columns), by a loop."""
    acts = log.activations(LAYER, dataset, step).astype(np.float64)
    labels = log.labels(dataset, step)
    means = np.full((len(log.class_names), acts.shape[1]), np.nan)
    for c in range(len(log.class_names)):
        if (labels == c).any():
            means[c] = acts[labels == c].mean(axis=0)
    return means


def test_neuron_view_says_where_a_neuron_never_fires_and_lists_its_top_categories(
    browser, demo_tab, demo_log
):
    log, step = demo_log, demo_log.steps[-1]
    maxima = {
        d: log.activations(LAYER, d, step).astype(np.float32).max(axis=0) for d in log.datasets
    }
    # a neuron that never fires on some set (on all of them, when dead)
    silent = next(
        n for n in range(maxima[log.datasets[0]].size) if min(m[n] for m in maxima.values()) <= 0
    )
    page, frame, errors = open_tab(browser, demo_tab, ready=".neuron-view")
    _go(frame, "#neuron-input", silent)
    view = frame.locator(f'.neuron-view[data-neuron="{silent}"]')
    view.wait_for()
    assert view.locator(".image-legend").count() == 1
    assert "green border: predicted right" in view.locator(".image-legend").text_content()
    for name in log.datasets:
        column = view.locator(f'.column[data-dataset="{name}"]')
        if maxima[name][silent] <= 0:
            assert "Never fires on this set" in column.text_content()
            assert column.locator(":scope > .grid figure").count() == 0
        else:
            assert column.locator(":scope > .grid figure").count() == 12
    # a live neuron: its top categories on each set, as the class means say
    live = int(np.argmax(maxima[log.datasets[0]]))
    _go(frame, "#neuron-input", live)
    view = frame.locator(f'.neuron-view[data-neuron="{live}"]')
    view.wait_for()
    ind_max = maxima[log.datasets[0]][live]
    for name in log.datasets:
        means = _category_means(log, name, step)[:, live]
        finite = [c for c in range(len(means)) if np.isfinite(means[c])]
        expected = sorted(finite, key=lambda c: (-means[c], c))[:5]
        items = view.locator(f'.column[data-dataset="{name}"] .top-categories li')
        assert items.evaluate_all("lis => lis.map(li => Number(li.dataset.label))") == expected
        first = items.first.locator(".value").text_content()
        assert first == f"mean {means[expected[0]] / ind_max * 100:.1f}% of the InD max"
    # a top category opens its category view
    name = log.datasets[1]
    view.locator(f'.column[data-dataset="{name}"] details.categories summary').click()
    top = view.locator(f'.column[data-dataset="{name}"] .top-categories li').first
    label = int(top.get_attribute("data-label"))
    top.click()
    heading = frame.locator(f'.category-view[data-dataset="{name}"][data-label="{label}"] h2')
    assert heading.text_content().startswith(f"category {log.class_names[label]} in {name}")
    assert errors == []
    page.close()


def _softmax_top(logits, k=5):
    probabilities = scipy.special.softmax(logits.astype(np.float64), axis=1)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)


def test_image_view_shows_top_predictions_follows_top_k_and_links_categories(
    browser, demo_tab, demo_log
):
    log, step = demo_log, demo_log.steps[-1]
    dataset = log.datasets[2]
    predictions = log.predictions(dataset, step)
    labels = log.labels(dataset, step)
    index = int(np.flatnonzero(predictions != labels)[0])  # a wrong one: both links
    classes, probabilities = _softmax_top(log.logits(dataset, step))
    url = (
        f"{demo_tab}/#deephys&p.deephys.view=image&p.deephys.image={index}@{dataset}&p.deephys.k=3"
    )
    page, frame, errors = open_tab(browser, demo_tab, url=url, ready=".image-view .top-predictions")
    items = frame.locator(".top-predictions li")
    assert (
        items.evaluate_all("lis => lis.map(li => Number(li.dataset.label))")
        == classes[index].tolist()
    )
    shown = items.locator(".value").all_text_contents()
    assert shown == [probability_percent(p) for p in probabilities[index]]
    # per-neuron strips follow Top k (3 here), in InD and in the image's own set
    for grid in frame.locator(".top-neuron .source .grid").all():
        assert grid.locator("figure").count() == 3
    # borders: right / wrong as label and prediction say, with the legend
    figures = frame.locator(".top-neuron .source figure")
    assert figures.count() > 0
    assert frame.locator(".image-view .image-legend").count() == 1
    assert frame.locator(".image-view figure:not(.right):not(.wrong)").count() == 0
    # the prediction opens its category; the confusion link its confusion set
    frame.locator(".facts .category-link[data-pred]").click()
    heading = frame.locator(".category-view h2")
    assert heading.text_content().startswith(
        f"label {log.class_names[labels[index]]} predicted as {log.class_names[predictions[index]]}"
    )
    assert errors == []
    page.close()


def test_category_picker_opens_any_class_by_name_and_lists_mistakes_by_confidence(
    browser, demo_tab, demo_log
):
    log, step = demo_log, demo_log.steps[-1]
    dataset = log.datasets[1]
    labels, predictions = log.labels(dataset, step), log.predictions(dataset, step)
    confidence = scipy.special.softmax(log.logits(dataset, step).astype(np.float64), axis=1).max(
        axis=1
    )
    url = f"{demo_tab}/#deephys&p.deephys.view=category"
    page, frame, errors = open_tab(browser, demo_tab, url=url, ready=".category-picker")
    options = frame.locator("datalist#class-names option")
    assert options.evaluate_all("os => os.map(o => o.value)") == list(log.class_names)
    # the class with the most false positives on this set, typed by name in upper case
    wanted = int(np.argmax([((predictions == c) & (labels != c)).sum() for c in range(10)]))
    frame.locator("#category-dataset").select_option(dataset)
    frame.locator("#category-label").fill(log.class_names[wanted].upper())
    frame.locator("#category-open").click()
    view = frame.locator(f'.category-view[data-dataset="{dataset}"][data-label="{wanted}"]')
    view.wait_for()
    assert view.locator(".image-legend").count() == 1
    assert view.locator("figure:not(.right):not(.wrong)").count() == 0
    for kind, selected in (
        ("false-positives", (predictions == wanted) & (labels != wanted)),
        ("false-negatives", (labels == wanted) & (predictions != wanted)),
    ):
        members = np.flatnonzero(selected)
        expected = members[np.argsort(-confidence[members], kind="stable")][:24]
        box = view.locator(f'.mistakes[data-kind="{kind}"]')
        assert f": {len(members)} images (most confident first" in box.locator("h3").text_content()
        shown = box.locator("figure").evaluate_all("fs => fs.map(f => Number(f.dataset.index))")
        # equal confidences may come in either order: compare the confidences shown
        assert len(shown) == len(expected)
        assert np.allclose(confidence[shown], confidence[expected], atol=1e-6)
        if len(members):
            sure = box.locator(".value").first.text_content()
            assert sure == f"{probability_percent(confidence[expected[0]])} sure"
    # a name that is no class: said in words, nothing opened
    frame.locator("#category-label").fill("no such class")
    frame.locator("#category-open").click()
    feedback = frame.locator(".picker-feedback").text_content()
    assert 'No class is named "no such class"' in feedback and "0 to 9" in feedback
    assert frame.locator(f'.category-view[data-label="{wanted}"]').count() == 1
    assert errors == []
    page.close()


def test_out_of_range_inputs_are_answered_in_the_same_words(browser, demo_tab):
    page, frame, errors = open_tab(browser, demo_tab, ready=".neuron-view")
    for neuron in (-1, 9999):
        _go(frame, "#neuron-input", neuron)
        error = frame.locator("#neuron-panel .message.error")
        error.wait_for()
        assert error.text_content().endswith(
            f"neuron {neuron} is out of range: layer '{LAYER}' has 50 neurons (0–49)"
        )
    top_k = requests.get(f"{demo_tab}/data/plugin/deephys/runs", timeout=10).json()["runs"][0][
        "top_k"
    ]
    _go(frame, "#k-input", 500)  # Top k beyond what was kept: clamped, and said
    assert frame.locator("#k-input").input_value() == str(top_k)
    assert f"it goes from 1 to {top_k}" in frame.locator("#k-note").text_content()
    assert [e for e in errors if "Failed to load resource" not in e] == []
    page.close()


def test_overview_density_plots_have_axes_on_one_range(browser, demo_tab, demo_log):
    url = f"{demo_tab}/#deephys&p.deephys.view=overview"
    page, frame, errors = open_tab(browser, demo_tab, url=url, ready=".overview-view .density-plot")
    for title in ("novelty", "spurious"):
        plots = frame.locator(f'.card figure.density[data-title^="{title}"] svg.density-plot')
        assert plots.count() == len(demo_log.datasets) - 1
        ticks = [p.locator("text.tick.x").all_text_contents() for p in plots.all()]
        assert all(t == ["0", "0.5", "1"] for t in ticks), ticks
        for plot in plots.all():
            assert plot.locator("text.tick.y").count() >= 2
            assert re.match(r"share of \d+ neurons", plot.locator("text.axis-title").text_content())
    # the bars are the share of neurons per bin: they sum to 1 on each plot
    shares = frame.locator("svg.density-plot").evaluate_all(
        "ps => ps.map(p => [...p.querySelectorAll('rect')]"
        ".reduce((s, r) => s + Number(r.dataset.share), 0))"
    )
    assert np.allclose(shares, 1.0)
    assert errors == []
    page.close()


class WideNet(TinyNet):
    """TinyNet with a 150-neuron layer: more than a page of the neuron table."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 150)
        self.head = nn.Linear(150, 3)


def test_neuron_table_pages_every_row_and_says_what_its_filter_understands(browser, tmp_path):
    torch.manual_seed(0)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    data = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    t.fit(WideNet(), loader(random_set(8, 0)), val_dataloaders=data)
    scores = read_log(tmp_path).scores("fc", "ood")
    with running_tensorboard(tmp_path, load_fast=False) as base:
        url = f"{base}/#deephys&p.deephys.view=overview"
        page, frame, errors = open_tab(
            browser, base, url=url, ready=".neuron-table tr[data-neuron]"
        )
        table = frame.locator(".neuron-table")
        rows = table.locator("tr[data-neuron]")
        assert rows.count() == 100
        assert (
            table.locator(".table-count").text_content().startswith("150 neurons; rows 1–100 shown")
        )
        table.locator('button[data-page="next"]').click()
        assert rows.count() == 50
        assert "rows 101–150" in table.locator(".table-count").text_content()
        seen = rows.evaluate_all("rs => rs.map(r => Number(r.dataset.neuron))")
        table.locator('button[data-page="prev"]').click()
        seen += rows.evaluate_all("rs => rs.map(r => Number(r.dataset.neuron))")
        assert sorted(seen) == list(range(150))  # every neuron, once
        assert "Filter: >0.5" in table.locator(".filter-help").text_content()
        table.locator("#neuron-filter").fill("10-19")
        assert rows.evaluate_all("rs => rs.map(r => Number(r.dataset.neuron))") == sorted(
            range(10, 20), key=lambda n: (np.nan_to_num(-scores.novelty[n], nan=np.inf), n)
        )
        assert table.locator(".table-count").text_content().startswith("10 of 150 neurons match")
        limit = float(np.nanmedian(scores.novelty))
        table.locator("#neuron-filter").fill(f">{limit}")
        expected = int((np.nan_to_num(scores.novelty, nan=-np.inf) > limit).sum())
        assert (
            table.locator(".table-count")
            .text_content()
            .startswith(f"{expected} of 150 neurons match")
        )
        table.locator("#neuron-filter").fill("bigger than 3")
        assert (
            '"bigger than 3" is not understood' in table.locator(".filter-feedback").text_content()
        )
        assert table.locator("#neuron-filter").get_attribute("aria-invalid") == "true"
        assert rows.count() == 100  # not understood: nothing filtered, and said so
        assert errors == []
        page.close()


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_a_notice_says_when_tensorboard_dropped_recorded_steps(browser, tmp_path, load_fast):
    """Logs of the events layout (before 0.3) get the notice; a log with step packs
    shows every step with TensorBoard's default flags, and no notice."""
    t = trainer(tmp_path / "fit", [DeephysCallback(layer="fc")], max_epochs=12)
    data = {"ind": loader(random_set(6, 1)), "ood": loader(random_set(6, 2))}
    t.fit(TinyNet(), loader(random_set(4, 0)), val_dataloaders=data)
    with running_tensorboard(tmp_path / "fit", load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base, ready=".neuron-view")
        assert frame.locator("#sampling-notice").is_hidden()
        assert frame.locator("#step-select option").count() == 12
        assert errors == []
        page.close()
    to_events_layout(t.logger.log_dir, tmp_path / "old" / "run")
    with running_tensorboard(tmp_path / "old", load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base, ready=".neuron-view")
        notice = frame.locator("#sampling-notice")
        assert notice.text_content() == (
            "TensorBoard holds 10 of the 12 recorded steps of this run (its sampling dropped 2). "
            "Start it with --samples_per_plugin=deephys=0 to see every step."
        )
        assert frame.locator("#step-select option").count() == 10
        if not load_fast:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "sampling-notice.png"))
        assert errors == []
        page.close()
    extra = ("--samples_per_plugin=deephys=0",)
    with running_tensorboard(tmp_path / "old", load_fast=load_fast, extra=extra) as base:
        page, frame, errors = open_tab(browser, base, ready=".neuron-view")
        assert frame.locator("#sampling-notice").is_hidden()
        assert frame.locator("#step-select option").count() == 12
        runs = requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"]
        assert runs[0]["sampling"] is None
        page.close()


def test_neuron_view_shows_the_distribution_bands_and_bottom_images(browser, demo_tab, demo_log):
    log, step = demo_log, demo_log.steps[-1]
    acts = {d: log.activations(LAYER, d, step).astype(np.float32) for d in log.datasets}
    neuron = int(np.argmax(acts[log.datasets[0]].max(axis=0)))  # the busiest on InD
    page, frame, errors = open_tab(browser, demo_tab, ready=".neuron-view")
    _go(frame, "#neuron-input", neuron)
    view = frame.locator(f'.neuron-view[data-neuron="{neuron}"]')
    view.wait_for()
    body = requests.get(
        f"{demo_tab}/data/plugin/deephys/neuron",
        params={"run": _run(demo_tab), "layer": LAYER, "neuron": neuron, "k": 12},
        timeout=30,
    ).json()
    for entry in body["datasets"]:
        name, column = entry["name"], view.locator(f'.column[data-dataset="{entry["name"]}"]')
        values = acts[name][:, neuron]
        fires = f"fires on {(values > 0).mean() * 100:.1f}% of its images"
        assert column.locator(".fires").text_content() == fires
        # the histogram: share of the set's images per bin, on the bins every set shares
        edges = np.asarray(entry["distribution"]["edges"])
        assert edges[0] == 0 and edges[-1] == pytest.approx(
            max(a[:, neuron].max() for a in acts.values())
        )
        expected = np.histogram(values, bins=edges)[0] / len(values)
        drawn = column.locator("svg.histogram rect.bin").evaluate_all(
            "rs => rs.map(r => Number(r.dataset.share))"
        )
        np.testing.assert_allclose(drawn, expected, atol=1.5 / len(values))
        outlined = column.locator("svg.histogram path.ind-outline").count()
        assert outlined == (0 if name == log.datasets[0] else 1)
        # the bottom 12, lowest first (ties by index), as read_log's activations say
        column.locator("details.bottom summary").click()
        bottom = column.locator("details.bottom figure").evaluate_all(
            "fs => fs.map(f => Number(f.dataset.index))"
        )
        assert bottom == sorted(range(len(values)), key=lambda i: (values[i], i))[:12]
        # five bands over (0, max], highest first; each image's activation in its band
        column.locator("details.intervals-box summary").click()
        bands = column.locator(".interval")
        assert bands.count() == 5
        top = values.max()
        for b, band in enumerate(bands.all()):
            low, high = (
                float(band.get_attribute("data-low")),
                float(band.get_attribute("data-high")),
            )
            assert high == pytest.approx(top * (5 - b) / 5, rel=1e-3)
            assert low == pytest.approx(top * (4 - b) / 5, rel=1e-3, abs=1e-6)
            for index in band.locator("figure").evaluate_all(
                "fs => fs.map(f => Number(f.dataset.index))"
            ):
                assert low - 1e-3 <= values[index] <= high + 1e-3
    assert errors == []
    page.close()


def _run(base) -> str:
    return requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"][0]["run"]


def test_maps_show_where_a_neuron_fires_over_its_top_images(browser, tmp_path):
    torch.manual_seed(0)
    t = trainer(tmp_path, [DeephysCallback(layers=["features", "fc"])], max_epochs=1)
    data = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=data)
    with running_tensorboard(tmp_path, load_fast=False) as base:
        run = _run(base)
        url = f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer=features&p.deephys.maps=1"
        page, frame, errors = open_tab(browser, base, url=url, ready=".neuron-view figure svg.map")
        assert frame.locator("main#deephys.show-maps").count() == 1
        assert frame.locator("#maps-input").is_checked()
        body = requests.get(
            f"{base}/data/plugin/deephys/neuron",
            params={"run": run, "layer": "features", "neuron": 0},
            timeout=30,
        ).json()
        assert drawn_maps(frame, body)
        frame.locator("#maps-input").uncheck()  # off: the thumbnails as they are
        assert frame.locator("main#deephys.show-maps").count() == 0
        assert frame.locator(".neuron-view figure svg.map").first.is_hidden()
        frame.locator("#maps-input").check()
        frame.locator("#layer-select").select_option("fc")  # a flat layer has none: said
        note = frame.locator(".neuron-view .message.empty", has_text="has no maps")
        note.wait_for()
        assert "Layer fc has no maps of where its neurons fire" in note.text_content()
        assert errors == []
        page.close()
