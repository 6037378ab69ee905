"""The Deephys tab in a real headless Chromium against a live tensorboard."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
import torch
from browser_tab import ARTIFACTS, loaded_images, open_tab, running_browser, skip_without_chromium
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback

HOSTILE = '<img src=x onerror="window.__xss=1">'

skip_without_chromium()


@pytest.fixture(scope="module")
def browser():
    with running_browser() as browser:
        yield browser


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_tab_shows_a_neurons_top_images(browser, demo_log_dir, demo_log, load_fast):
    with running_tensorboard(demo_log_dir[0], load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base)
        datasets = frame.locator("ul.datasets li .name").all_text_contents()
        assert datasets == list(demo_log.datasets)
        columns = frame.locator(".neuron-view .column")
        assert columns.count() == 4
        # neuron 0 of the latest step, 12 images per dataset, as read_log says
        step = demo_log.steps[-1]
        for i, name in enumerate(demo_log.datasets):
            acts = demo_log.activations("backbone.fc1", name, step).astype(np.float32)[:, 0]
            expected = sorted(range(len(acts)), key=lambda j: (-acts[j], j))[:12]
            shown = (
                columns.nth(i)
                .locator(":scope > .grid figure")
                .evaluate_all("figs => figs.map(f => Number(f.dataset.index))")
            )
            assert shown == expected
        page.wait_for_function(
            "() => [...document.querySelector('iframe').contentDocument"
            ".querySelectorAll('.neuron-view .column > .grid img')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
        assert loaded_images(frame, ".neuron-view .columns") >= 4 * 12
        # pick another neuron by number
        frame.locator("#neuron-input").fill("7")
        frame.locator("#neuron-input").dispatch_event("change")
        frame.locator('.neuron-view[data-neuron="7"]').wait_for()
        assert "Neuron 7 of 50" in frame.locator(".neuron-view h2").text_content()
        frame.locator("#neuron-next").click()
        frame.locator('.neuron-view[data-neuron="8"]').wait_for()
        if not load_fast:  # a screenshot of the most active neuron, for the docs
            live = demo_log.activations("backbone.fc1", "colored", step).astype(np.float32)
            busiest = int(np.argmax(live.max(axis=0)))
            frame.locator("#neuron-input").fill(str(busiest))
            frame.locator("#neuron-input").dispatch_event("change")
            frame.locator(f'.neuron-view[data-neuron="{busiest}"]').wait_for()
            page.wait_for_timeout(1000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "deephys-tab.png"))
        assert errors == []
        page.close()


def test_names_from_user_data_are_shown_as_text(browser, tmp_path):
    hostile_dataset = "<b>ood</b>"
    t = trainer(
        tmp_path,
        [DeephysCallback(layer="fc", class_names=[HOSTILE, "<i>b</i>", "c"])],
        max_epochs=1,
    )
    t.fit(
        TinyNet(),
        loader(random_set(8, 0)),
        val_dataloaders={
            "ind": loader(random_set(6, 1)),
            hostile_dataset: loader(random_set(6, 2)),
        },
    )
    firing = _neuron_firing_on_every_set(tmp_path, "fc")
    with running_tensorboard(tmp_path, load_fast=False) as base:
        page, frame, errors = open_tab(browser, base, ready=".neuron-view")
        frame.locator("#neuron-input").fill(str(firing))
        frame.locator("#neuron-input").dispatch_event("change")
        frame.locator(f'.neuron-view[data-neuron="{firing}"] figure img').first.wait_for()
        assert hostile_dataset in frame.locator("ul.datasets").text_content()
        assert frame.locator("ul.datasets b").count() == 0
        figures = frame.locator(".column > .grid figure")
        labels = figures.evaluate_all(
            "figs => figs.map(f => f.querySelector('.label').textContent)"
        )
        names = [HOSTILE, "<i>b</i>", "c"]
        expected = [
            f"{names[y]} → {names[p]}"
            for name in ("ind", hostile_dataset)
            for y, p in zip(*_labels_and_predictions(tmp_path, name), strict=True)
        ]
        assert sorted(labels) == sorted(expected)
        assert frame.locator("figcaption img, figcaption i, header b").count() == 0
        frame.locator("#view-overview").click()  # one step: a dot per line, names as text
        frame.locator(".over-time .score-plot").first.wait_for()
        assert frame.locator(".over-time .legend .name").all_text_contents() == [hostile_dataset]
        series = frame.locator("svg.line-plot g.series")
        assert series.evaluate_all("gs => gs.map(g => g.dataset.dataset)") == [hostile_dataset] * 3
        assert frame.locator(".over-time b").count() == 0
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.__xss") is None
        assert frame.locator("body").evaluate("() => window.__xss") is None
        assert errors == []
        page.close()


def _neuron_firing_on_every_set(logdir, layer) -> int:
    """The first neuron of ``layer`` whose highest activation is above 0 on every set
    (a neuron that never fires on a set shows no top images there)."""
    from deephys_lightning import read_log

    log = read_log(logdir)
    step = log.steps[-1]
    maxima = np.stack(
        [log.activations(layer, name, step).astype(np.float32).max(axis=0) for name in log.datasets]
    )
    return int(np.flatnonzero((maxima > 0).all(axis=0))[0])


def _labels_and_predictions(logdir, dataset):
    from deephys_lightning import read_log

    log = read_log(logdir)
    step = log.steps[-1]
    return log.labels(dataset, step).tolist(), log.predictions(dataset, step).tolist()


def test_views_click_through(browser, demo_log_dir, demo_log):
    step = demo_log.steps[-1]
    names = demo_log.class_names
    with running_tensorboard(demo_log_dir[0], load_fast=False) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#view-overview").click()
        frame.locator(".overview-view .card").first.wait_for()
        assert frame.locator(".overview-view .card").count() == 4
        # the neuron table sorts by the first OOD set's novelty, highest first
        first_row = frame.locator(".neuron-table tr[data-neuron]").first
        novelty = demo_log.scores("backbone.fc1", "permuted", step).novelty
        assert int(first_row.get_attribute("data-neuron")) == int(np.nanargmax(novelty))
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "deephys-overview.png"), full_page=True)
        # a confusion cell of the permuted set opens the category view of that pair
        labels = demo_log.labels("permuted", step)
        preds = demo_log.predictions("permuted", step)
        a, b = int(labels[0]), int(preds[0])
        card = frame.locator('.card[data-dataset="permuted"]')
        card.locator(f'td[data-label="{a}"][data-pred="{b}"]').click()
        frame.locator(".category-view").wait_for()
        members = np.flatnonzero((labels == a) & (preds == b))
        heading = frame.locator(".category-view h2").text_content()
        assert f"{len(members)} images" in heading and names[a] in heading
        shown = frame.locator(".category-view figure").evaluate_all(
            "figs => figs.map(f => Number(f.dataset.index))"
        )
        assert shown == members[:48].tolist()
        # an image opens the image view, with its label and prediction
        frame.locator(".category-view figure").first.click()
        frame.locator(".image-view").wait_for()
        facts = frame.locator(".image-view .facts").text_content()
        assert f"label: {names[a]}" in facts and f"prediction: {names[b]}" in facts
        neurons, _ = demo_log.image_top_neurons("backbone.fc1", "permuted", step)
        first = frame.locator(".top-neuron header").first
        assert int(first.get_attribute("data-neuron")) == int(neurons[members[0], 0])
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "deephys-image.png"), full_page=True)
        # any image by dataset and index
        frame.locator("#image-dataset").select_option("drifted")
        frame.locator("#image-index").fill("7")
        frame.locator("#image-open").click()
        frame.locator('.image-view[data-dataset="drifted"][data-index="7"]').wait_for()
        facts = frame.locator(".image-view .facts").text_content()
        assert f"label: {names[int(demo_log.labels('drifted', step)[7])]}" in facts
        page.evaluate("() => history.back()")
        frame.locator(f'.image-view[data-index="{members[0]}"]').wait_for()
        # a neuron opens the neuron view (keyboard works too)
        first.focus()
        page.keyboard.press("Enter")
        frame.locator(f'.neuron-view[data-neuron="{int(neurons[members[0], 0])}"]').wait_for()
        assert errors == []
        page.close()


def test_overview_detection_table_and_confusion_in_both_directions(browser, demo_log_dir, demo_log):
    step = demo_log.steps[-1]
    names = demo_log.class_names
    with running_tensorboard(demo_log_dir[0], load_fast=True) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#view-overview").click()
        card = frame.locator('.card[data-dataset="permuted"]')
        card.wait_for()
        # one row per default detector, with the logged AUROC
        rows = card.locator("table.detection tr[data-detector]")
        assert rows.count() == 3
        for row in demo_log.detection("permuted", step):
            cells = card.locator(f'tr[data-detector="{row.detector}"] td').all_text_contents()
            assert cells[0] == row.detector and cells[1] == f"{row.auroc:.3f}"
        summary = card.locator(".scores").text_content()
        expected = demo_log.scores("backbone.fc1", "permuted", step).summary()
        assert f"novelty {expected['novelty_mean']:.3g}" in summary and "raw" in summary
        # an off-diagonal confusion cell, then the paper's set in both directions
        labels = demo_log.labels("permuted", step)
        preds = demo_log.predictions("permuted", step)
        a, b = next((int(x), int(y)) for x, y in zip(labels, preds, strict=True) if x != y)
        card.locator(f'td[data-label="{a}"][data-pred="{b}"]').click()
        frame.locator(".category-view .direction").wait_for()
        frame.locator('.category-view button[data-either="true"]').click()
        frame.locator('.category-view h2:has-text("confusion between")').wait_for()
        heading = frame.locator(".category-view h2").text_content()
        both = np.flatnonzero((labels == a) & (preds == b) | (labels == b) & (preds == a))
        assert f"{len(both)} images" in heading and names[a] in heading and names[b] in heading
        shown = frame.locator(".category-view figure").evaluate_all(
            "figs => figs.map(f => Number(f.dataset.index))"
        )
        assert shown == both[:48].tolist()
        assert "of its InD max" in frame.locator(".category-neurons li").first.text_content()
        assert ":either@" in page.evaluate("() => decodeURIComponent(location.href)")
        # the bookmark holds it: a reload opens the same set
        page.reload()
        frame = page.frame_locator("iframe")
        frame.locator('.category-view h2:has-text("confusion between")').wait_for()
        # back to the directed set
        frame.locator('.category-view button[data-either="false"]').click()
        frame.locator('.category-view h2:has-text("predicted as")').wait_for()
        assert errors == []
        page.close()


def test_back_button_keyboard_and_dark_mode(browser, demo_log_dir, demo_log):
    with running_tensorboard(demo_log_dir[0], load_fast=False) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#view-overview").click()
        frame.locator(".overview-view").wait_for()
        row = frame.locator(".neuron-table tr[data-neuron]").nth(2)
        neuron = int(row.get_attribute("data-neuron"))
        row.click()
        frame.locator(f'.neuron-view[data-neuron="{neuron}"]').wait_for()
        # the browser's back and forward buttons walk the joint session history, which
        # holds the tab's entries (Playwright's go_back waits for a top-level load)
        page.evaluate("() => history.back()")
        frame.locator(".overview-view").wait_for()
        page.evaluate("() => history.back()")
        frame.locator('.neuron-view[data-neuron="0"]').wait_for()
        page.evaluate("() => history.forward()")
        frame.locator(".overview-view").wait_for()
        # arrow keys step through neurons in the neuron view
        frame.locator("#view-neuron").click()
        current = int(frame.locator(".neuron-view").get_attribute("data-neuron"))
        frame.locator("h2").click()
        page.keyboard.press("ArrowRight")
        frame.locator(f'.neuron-view[data-neuron="{current + 1}"]').wait_for()
        # TensorBoard's dark mode reaches the tab
        page.evaluate("document.body.classList.add('dark-mode')")
        frame.locator("html.dark").wait_for(state="attached")
        background = frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")
        assert background == "rgb(32, 33, 36)"
        assert errors == []
        page.close()


def _image_view_facts(frame) -> tuple[str, list[int]]:
    """The image view's label/prediction text and its top neurons, in order."""
    facts = frame.locator(".image-view .facts").text_content()
    neurons = frame.locator(".top-neuron header").evaluate_all(
        "hs => hs.map(h => Number(h.dataset.neuron))"
    )
    return facts, neurons


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_tensorboard_url_is_a_bookmark_of_the_view(browser, demo_log_dir, demo_log, load_fast):
    names = demo_log.class_names
    first = demo_log.steps[0]  # not the default (latest) step, so the URL must carry it
    with running_tensorboard(demo_log_dir[0], load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#step-select").select_option(str(first))
        frame.locator(f'.neuron-view h2:has-text("step {first} ")').wait_for()
        frame.locator("#view-image").click()
        frame.locator("#image-dataset").select_option("drifted")
        frame.locator("#image-index").fill("7")
        frame.locator("#image-open").click()
        frame.locator('.image-view[data-dataset="drifted"][data-index="7"]').wait_for()
        facts, neurons = _image_view_facts(frame)
        top, _ = demo_log.image_top_neurons("backbone.fc1", "drifted", first)
        assert neurons == top[7, : len(neurons)].tolist()
        label = names[int(demo_log.labels("drifted", first)[7])]
        prediction = names[int(demo_log.predictions("drifted", first)[7])]
        assert f"label: {label}" in facts and f"prediction: {prediction}" in facts
        # TensorBoard's own address bar holds the view, next to its dashboard name
        url = page.url
        assert url.startswith(f"{base}/#deephys&")
        for part in (
            "p.deephys.view=image",
            f"p.deephys.step={first}",
            "p.deephys.image=7%40drifted",
        ):
            assert part in url
        page.wait_for_timeout(1500)  # TensorBoard leaves it alone
        assert page.url == url

        # the copied URL, in a fresh browser context, opens the same view and numbers
        shared, shared_frame, shared_errors = open_tab(
            browser, base, url=url, ready='.image-view[data-dataset="drifted"][data-index="7"]'
        )
        assert _image_view_facts(shared_frame) == (facts, neurons)
        assert shared_frame.locator("#step-select").input_value() == str(first)
        # back and forward still walk the views; a reload keeps the view
        shared_frame.locator(".top-neuron header").first.click()
        shared_frame.locator(f'.neuron-view[data-neuron="{neurons[0]}"]').wait_for()
        assert "p.deephys.view=neuron" in shared.url
        shared.evaluate("() => history.back()")
        shared_frame.locator('.image-view[data-dataset="drifted"][data-index="7"]').wait_for()
        assert shared.url == url
        shared.evaluate("() => history.forward()")
        shared_frame.locator(f'.neuron-view[data-neuron="{neurons[0]}"]').wait_for()
        shared.reload(wait_until="domcontentloaded")
        shared_frame.locator(f'.neuron-view[data-neuron="{neurons[0]}"] figure').first.wait_for()
        assert f"step {first} " in shared_frame.locator(".neuron-view h2").text_content()
        shared.evaluate("() => history.back()")  # to the entry before the reload
        shared_frame.locator('.image-view[data-dataset="drifted"][data-index="7"]').wait_for()

        # switching TensorBoard dashboards keeps the state; back returns to the tab
        page.get_by_role("tab", name="Scalars").click()
        page.wait_for_url(f"{base}/#scalars&*")
        assert url.split("&", 1)[1] in page.url
        page.get_by_role("tab", name="Deephys").click()
        page.wait_for_url(url)
        page.evaluate("() => history.back()")
        page.wait_for_url(f"{base}/#scalars&*")
        page.evaluate("() => history.back()")
        page.wait_for_url(url)
        frame.locator('.image-view[data-dataset="drifted"][data-index="7"]').wait_for()
        assert errors == [] and shared_errors == []
        shared.close()
        page.close()


def test_outside_tensorboard_the_frames_own_url_holds_the_state(browser, demo_log_dir):
    with running_tensorboard(demo_log_dir[0], load_fast=False) as base:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/data/plugin_entry.html?name=deephys", wait_until="domcontentloaded")
        page.locator(".neuron-view figure").first.wait_for(timeout=60_000)
        assert "#view=neuron&" in page.url
        page.locator("#view-overview").click()
        page.locator(".overview-view").wait_for()
        assert "#view=overview&" in page.url
        page.evaluate("() => history.back()")
        page.locator(".neuron-view").wait_for()
        assert errors == []
        page.close()


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_overview_plots_the_mean_scores_across_steps(browser, demo_log_dir, demo_log, load_fast):
    ind = demo_log.record(demo_log.steps[-1]).ind
    oods = [name for name in demo_log.datasets if name != ind]
    with running_tensorboard(demo_log_dir[0], load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#view-overview").click()
        frame.locator(".over-time .score-plot").first.wait_for()
        assert frame.locator(".over-time .legend .name").all_text_contents() == oods
        plots = frame.locator(".over-time figure.score-plot")
        assert plots.evaluate_all("fs => fs.map(f => f.dataset.score)") == [
            "novelty",
            "spurious",
            "activation_ratio",
        ]
        for score in ("novelty", "spurious", "activation_ratio"):
            lines = frame.locator(f'svg.line-plot[data-score="{score}"] g.series')
            # one line per OOD set, through one dot per recorded step
            assert lines.evaluate_all("gs => gs.map(g => g.dataset.dataset)") == oods
            for i, name in enumerate(oods):
                line = lines.nth(i)
                assert line.locator("path.line").get_attribute("d").startswith("M")
                dots = line.locator("circle").evaluate_all(
                    "cs => cs.map(c => [Number(c.dataset.step), Number(c.dataset.value)])"
                )
                expected = [
                    (
                        step,
                        float(
                            np.nanmean(getattr(demo_log.scores("backbone.fc1", name, step), score))
                        ),
                    )
                    for step in demo_log.steps
                ]
                assert [s for s, _ in dots] == [s for s, _ in expected]
                assert [v for _, v in dots] == pytest.approx([v for _, v in expected], rel=1e-5)
                served = requests.get(
                    f"{base}/data/plugin/deephys/scores_over_time",
                    params={
                        "run": "colored_digits/version_0",
                        "layer": "backbone.fc1",
                        "dataset": name,
                    },
                    timeout=10,
                ).json()
                assert [v for _, v in dots] == [p[score] for p in served["points"]]
        # the exact numbers, under "show numbers"
        numbers = frame.locator(".over-time details.over-time-numbers")
        assert not numbers.evaluate("d => d.open")
        numbers.locator("summary").click()
        rows = numbers.locator("tr[data-dataset]")
        assert rows.count() == len(oods) * len(demo_log.steps)
        first_row = rows.first.locator("td").all_text_contents()
        assert first_row[:3] == [oods[0], str(demo_log.steps[0]), "0"]
        novelty = np.nanmean(demo_log.scores("backbone.fc1", oods[0], demo_log.steps[0]).novelty)
        assert float(first_row[3]) == pytest.approx(novelty, rel=1e-2, abs=1e-3)
        if not load_fast:  # a screenshot of the plots, for the docs
            ARTIFACTS.mkdir(exist_ok=True)
            page.wait_for_timeout(300)
            frame.locator(".over-time").screenshot(
                path=str(ARTIFACTS / "deephys-scores-over-time.png")
            )
        # readable in TensorBoard's dark mode: the lines take the dark palette
        light = frame.locator("g.series-0").first.evaluate("g => getComputedStyle(g).color")
        page.evaluate("document.body.classList.add('dark-mode')")
        frame.locator("html.dark").wait_for(state="attached")
        dark = frame.locator("g.series-0").first.evaluate("g => getComputedStyle(g).color")
        assert light != dark
        tick = frame.locator("svg.line-plot text.tick").first.evaluate(
            "t => getComputedStyle(t).fill"
        )
        assert tick == "rgb(158, 158, 158)"
        assert errors == []
        page.close()


# -- following TensorBoard's reload ------------------------------------------------

RUNS_ROUTE = "/data/plugin/deephys/runs"


def _fit_tiny(logdir, *, max_epochs: int, ckpt_path=None):
    """Fit TinyNet with a DeephysCallback into ``logdir/tiny/version_0``: one record per
    epoch; with ``ckpt_path`` it resumes there, so its records come at later steps."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(logdir), name="tiny", version=0)
    t = trainer(logdir, [DeephysCallback(layer="fc")], max_epochs=max_epochs, logger=logger)
    # Seeded: with the RNG as earlier tests leave it, every unit may be dead on InD
    # (no novelty, no points to draw).
    torch.manual_seed(0)
    t.fit(
        TinyNet(),
        loader(random_set(8, 0)),
        val_dataloaders={"ind": loader(random_set(6, 1)), "ood": loader(random_set(6, 2))},
        ckpt_path=ckpt_path,
    )
    return t


def _served_runs(base, until, timeout: float = 30.0) -> list[dict]:
    """The runs the plugin serves, once ``until(runs)`` holds (TensorBoard loads new
    event files every --reload_interval seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = requests.get(f"{base}{RUNS_ROUTE}", timeout=10).json()["runs"]
        if until(runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.3)


def _click_tensorboard_reload(page):
    """Click the reload button in TensorBoard's top bar; return once the tab has
    fetched its runs again (TensorBoard broadcasts experimental.DataReloaded to the
    plugin frames after it has reloaded its own data)."""
    with page.expect_response(lambda r: r.url.endswith(RUNS_ROUTE), timeout=30_000):
        page.locator("app-header-reload button.reload-button").click()


def _step_options(frame) -> list[str]:
    return frame.locator("#step-select option").evaluate_all("os => os.map(o => o.value)")


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_new_steps_appear_on_tensorboard_reload(browser, tmp_path, load_fast):
    first = _fit_tiny(tmp_path, max_epochs=1)
    checkpoint = tmp_path / "epoch1.ckpt"
    first.save_checkpoint(checkpoint)
    with running_tensorboard(tmp_path, load_fast=load_fast) as base:
        page, frame, errors = open_tab(browser, base, ready=".neuron-view")
        assert frame.locator("#run-select").input_value() == "tiny/version_0"
        (old_step,) = _step_options(frame)
        # a view that is not the default one: another neuron's number, then the overview
        frame.locator("#neuron-input").fill("3")
        frame.locator("#neuron-input").dispatch_event("change")
        frame.locator('.neuron-view[data-neuron="3"]').wait_for()
        frame.locator("#view-overview").click()
        frame.locator(".overview-view .over-time").wait_for()
        frame.locator(".over-time details.over-time-numbers summary").click()
        dots = frame.locator('svg.line-plot[data-score="novelty"] circle')
        dots.first.wait_for(state="attached")  # the scores over time arrive on their own
        assert dots.count() == 1
        frame.locator(".overview-view").evaluate("el => { el.__before_reload = true; }")
        panel_requests: list[str] = []
        page.on(
            "request",
            lambda r: (
                panel_requests.append(r.url)
                if "/data/plugin/deephys/" in r.url and not r.url.endswith(RUNS_ROUTE)
                else None
            ),
        )
        url = page.url

        # a reload that brings nothing new leaves the tab alone
        _click_tensorboard_reload(page)
        page.wait_for_timeout(500)
        assert panel_requests == []
        assert frame.locator(".overview-view").evaluate("el => el.__before_reload") is True

        # training goes on: a second record, at a later step of the same run
        _fit_tiny(tmp_path, max_epochs=2, ckpt_path=checkpoint)
        runs = _served_runs(base, lambda runs: len(runs[0]["steps"]) == 2)
        new_step = str(runs[0]["steps"][-1]["step"])
        assert [str(s["step"]) for s in runs[0]["steps"]] == [old_step, new_step]
        _click_tensorboard_reload(page)
        frame.locator(f'#step-select option[value="{new_step}"]').wait_for(state="attached")
        assert _step_options(frame) == [old_step, new_step]
        # the view stays: same step, same overview element (not redrawn), same URL ...
        assert frame.locator("#step-select").input_value() == old_step
        assert frame.locator(".overview-view").evaluate("el => el.__before_reload") is True
        assert f"step {old_step} " in frame.locator(".overview-view h2").text_content()
        assert page.url == url
        # ... but its scores across steps take the new step, still with their numbers open
        dots.nth(1).wait_for(state="attached")
        steps = dots.evaluate_all("cs => cs.map(c => c.dataset.step)")
        assert steps == [old_step, new_step]
        assert frame.locator(".over-time details.over-time-numbers").evaluate("d => d.open")
        assert all("scores_over_time" in u for u in panel_requests)
        # the new step is one pick away, and the neuron is still the one chosen
        frame.locator("#step-select").select_option(new_step)
        frame.locator(f'.overview-view h2:has-text("step {new_step} ")').wait_for()
        assert f"p.deephys.step={new_step}" in page.url and "p.deephys.neuron=3" in page.url
        frame.locator("#view-neuron").click()
        frame.locator('.neuron-view[data-neuron="3"]').wait_for()
        assert errors == []
        page.close()


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_empty_tab_shows_data_arriving_on_tensorboard_reload(browser, tmp_path, load_fast):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning.writing.summaries import EventFileSink, tensor_summary
    from tensorboard_plugin_deephys.log.metadata import Kind

    # what a first validation has written before its record: Deephys tags, no run yet
    sink = EventFileSink(EventFileWriter(str(tmp_path / "partial")))
    sink.add_summary(tensor_summary(Kind.LABELS, np.zeros(6, np.int32), dataset="ind"), step=1)
    sink.close()
    with running_tensorboard(tmp_path, load_fast=load_fast, wait_for_runs=False) as base:
        page, frame, errors = open_tab(browser, base, ready="main > .message.empty")
        assert "No Deephys data yet" in frame.locator("main").text_content()
        assert (
            "partial: it holds Deephys arrays but no record yet"
            in frame.locator("main").text_content()
        )
        _click_tensorboard_reload(page)  # still nothing: still the message
        assert frame.locator("main > .message.empty").count() == 1
        _fit_tiny(tmp_path, max_epochs=1)
        runs = _served_runs(base, bool)
        assert [r["run"] for r in runs] == ["tiny/version_0"]
        _click_tensorboard_reload(page)
        frame.locator('.neuron-view[data-neuron="0"]').wait_for(timeout=30_000)
        assert frame.locator("#run-select").input_value() == "tiny/version_0"
        assert _step_options(frame) == [str(runs[0]["steps"][0]["step"])]
        # the run that holds arrays but no record is named above the views, nothing else
        assert frame.locator("main > .message").count() == 1
        assert "partial" in frame.locator("main > .message.warning").text_content()
        assert "p.deephys.run=tiny%2Fversion_0" in page.url
        assert errors == []
        page.close()


def test_a_host_page_that_never_answers_does_not_hold_up_the_tab(browser, demo_log_dir):
    """A same-origin page around the tab that is not TensorBoard: the tab asks it for
    its URL data over the plugin API, hears nothing, and goes on with the page's hash
    without waiting out more than a short timeout, while the runs load."""
    with running_tensorboard(demo_log_dir[0], load_fast=False) as base:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route(
            f"{base}/deaf-host.html",
            lambda route: route.fulfill(
                content_type="text/html",
                body='<iframe src="/data/plugin_entry.html?name=deephys"'
                ' style="width:1200px;height:800px"></iframe>',
            ),
        )
        run = "colored_digits%2Fversion_0"
        page.goto(
            f"{base}/deaf-host.html#deephys&p.deephys.run={run}&p.deephys.neuron=5",
            wait_until="domcontentloaded",
        )
        frame = page.frame_locator("iframe")
        frame.locator('.neuron-view[data-neuron="5"]').wait_for(timeout=60_000)
        assert f"p.deephys.run={run}" in page.url and "p.deephys.view=neuron" in page.url
        # from the runs' arrival to the first view request: not the old 1 s wait
        gap = frame.locator("body").evaluate(
            """() => {
                const entries = performance.getEntriesByType('resource');
                const runs = entries.find(e => e.name.endsWith('/runs'));
                const neuron = entries.find(e => e.name.includes('/neuron?'));
                return neuron.startTime - runs.responseEnd;
            }"""
        )
        assert gap < 800, gap
        assert errors == []
        page.close()


@pytest.mark.fault
def test_the_tab_says_which_runs_it_cannot_show_and_which_record_is_incomplete(
    browser, tmp_path, demo_log_dir
):
    """Under the Rust loader a run named with a quote is unreadable: the tab lists it
    with its cause (as text) and shows the others; a record whose arrays a loader
    dropped gets a notice naming them."""
    import shutil

    from event_surgery import drop_value, rewrite_events

    source = _fit_tiny(tmp_path / "source", max_epochs=2).logger.log_dir
    logdir = tmp_path / "logs"
    shutil.copytree(demo_log_dir[1], logdir / 'quote"d')
    dropped = "deephys.data/fc/ood/top_indices"

    drop = drop_value(dropped, 4)

    rewrite_events(source, logdir / "partial", drop)
    with running_tensorboard(logdir, load_fast=True) as base:
        _served_runs(base, lambda runs: [r["run"] for r in runs] == ["partial"])
        time.sleep(2.5)  # past the plugin's listing cache
        url = f"{base}/#deephys&p.deephys.run=partial&p.deephys.step=4"
        page, frame, errors = open_tab(browser, base, url=url, ready=".message.incomplete")
        notice = frame.locator("#unavailable-runs")
        assert 'quote"d' in notice.text_content() and "--load_fast=false" in notice.text_content()
        assert notice.locator("li").count() == 1
        incomplete = frame.locator(".message.incomplete").text_content()
        assert "1 of its arrays are missing" in incomplete and dropped in incomplete
        assert "top_indices" in frame.locator(".message.error").text_content()  # the view says why
        frame.locator("#step-select").select_option("2")  # the intact step: no notice
        frame.locator(".neuron-view .column").first.wait_for(timeout=30_000)
        assert frame.locator(".message.incomplete").count() == 0
        assert [e for e in errors if "Failed to load resource" not in e] == []
        page.close()


def test_thumbnails_from_s3_show_and_unreadable_ones_are_said_in_words(browser, tmp_path):
    """A --logdir_spec with a run on a real S3 API server (its thumbnails load in the
    browser) and a local run whose thumbnail files were lost (the tab says why where
    the images would be, as text, instead of broken images)."""
    import shutil

    from lightning.pytorch.loggers import TensorBoardLogger
    from s3_server import new_bucket, running_s3_server

    with running_s3_server():
        bucket = new_bucket()
        logger = TensorBoardLogger(f"s3://{bucket}/exp", name="tiny", version=0)
        t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger, max_epochs=1)
        t.fit(
            TinyNet(),
            loader(random_set(8, 0)),
            val_dataloaders={"ind": loader(random_set(6, 1)), "ood": loader(random_set(6, 2))},
        )
        local = tmp_path / "local"
        _fit_tiny(local, max_epochs=1)
        shutil.rmtree(local / "tiny" / "version_0" / "plugins" / "deephys" / "thumbnails")
        spec = f"cloud:s3://{bucket}/exp,gone:{local}"
        with running_tensorboard(("--logdir_spec", spec), load_fast=False) as base:
            _served_runs(base, lambda runs: len(runs) == 2)
            # the image view of an OOD image: it shows images of both sets whatever
            # the neurons of this random net fire on
            view = "&p.deephys.view=image&p.deephys.image=0@ood"
            url = f"{base}/#deephys&p.deephys.run=cloud/tiny/version_0{view}"
            page, frame, errors = open_tab(browser, base, url=url, ready=".image-view img")
            deadline = time.monotonic() + 30
            while loaded_images(frame, ".image-view") == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert loaded_images(frame, ".image-view") > 0
            assert frame.locator(".thumbnail-error").count() == 0
            page.close()
            url = f"{base}/#deephys&p.deephys.run=gone/tiny/version_0{view}"
            page, frame, errors = open_tab(browser, base, url=url, ready=".thumbnails-unavailable")
            notices = frame.locator(".thumbnails-unavailable")
            notices.nth(1).wait_for(timeout=30_000)  # one per dataset: ind and ood
            texts = sorted(notices.all_inner_texts())
            assert texts[0].startswith("The images of ind cannot be shown: ")
            assert "the thumbnails of 'ind' are missing" in texts[0]
            note = frame.locator(".thumbnail-error").first
            assert note.inner_text() == "No image"
            assert "the thumbnails of" in note.get_attribute("title")
            assert frame.locator(".image-view img").count() == 0  # no broken images left
            page.screenshot(path=str(ARTIFACTS / "thumbnails-unreadable.png"))
            page.close()
