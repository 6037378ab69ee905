"""The demo's log in the views that explain a shift (issue 30), in a real headless
Chromium against a live tensorboard: a wrong prediction's "what pushed the
prediction" panel and a category across every set, checked against the routes, with
a screenshot of each for the docs (test-artifacts/)."""

from __future__ import annotations

import numpy as np
import requests
from browser_tab import ARTIFACTS, open_tab, running_browser, skip_without_chromium
from tensorboard_process import running_tensorboard

skip_without_chromium()

LAYER = "backbone.fc1"


def test_the_demo_explains_a_wrong_prediction_and_a_category(demo_log_dir, demo_log):
    step = demo_log.steps[-1]
    labels, predictions = demo_log.labels("permuted", step), demo_log.predictions("permuted", step)
    index = int(np.flatnonzero(labels != predictions)[0])
    with (
        running_browser() as browser,
        running_tensorboard(demo_log_dir[0], load_fast=False) as base,
    ):
        api = f"{base}/data/plugin/deephys"
        run = requests.get(f"{api}/runs", timeout=10).json()["runs"][0]["run"]
        params = {"run": run, "layer": LAYER, "dataset": "permuted", "index": index}
        pushes = requests.get(f"{api}/image", params=params, timeout=30).json()["pushes"]
        assert pushes["available"] is True  # the demo's fc1 feeds its linear head
        view = f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer={LAYER}"
        page, frame, errors = open_tab(
            browser,
            base,
            url=f"{view}&p.deephys.view=image&p.deephys.image={index}%40permuted",
            ready=".pushes-panel li",
        )
        shown = frame.locator(".pushes-panel .push-column").first.locator("li")
        assert [int(li.get_attribute("data-neuron")) for li in shown.all()] == [
            row["neuron"] for row in pushes["predicted"]
        ]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "deephys-pushes.png"), full_page=True)

        label = int(labels[index])
        page.goto(f"{view}&p.deephys.view=category&p.deephys.category={label}::0@colored")
        frame = page.frame_locator("iframe")
        columns = frame.locator(".category-sets .set-column")
        columns.first.wait_for()
        params = {"run": run, "layer": LAYER, "label": label}
        sets = requests.get(f"{api}/category_sets", params=params, timeout=30).json()
        assert [c.get_attribute("data-dataset") for c in columns.all()] == [
            d["name"] for d in sets["datasets"]
        ]
        page.screenshot(path=str(ARTIFACTS / "deephys-category-sets.png"), full_page=True)
        assert errors == []
