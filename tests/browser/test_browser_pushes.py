"""What pushed a prediction, in a real headless Chromium against a live tensorboard:
the image view's lists of the top contributions to the predicted and the true class,
the neuron view's zeroing line, a confusion set's top mean contributions, each equal
to the route's; and the reason shown for a layer without a linear head."""

from __future__ import annotations

import numpy as np
import requests
import torch
from browser_tab import open_tab, running_browser, skip_without_chromium
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log

skip_without_chromium()


def test_the_views_show_what_pushed_the_predictions(tmp_path):
    torch.manual_seed(0)
    val = {"ind": loader(random_set(24, 1)), "ood": loader(random_set(24, 2))}
    t = trainer(tmp_path, [DeephysCallback(layers=["fc", "features.0"])], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    labels, predictions = log.labels("ood"), log.predictions("ood")
    index = int(np.flatnonzero(labels != predictions)[0])  # a wrong prediction
    with running_browser() as browser, running_tensorboard(tmp_path, load_fast=False) as base:
        api = f"{base}/data/plugin/deephys"
        run = requests.get(f"{api}/runs", timeout=10).json()["runs"][0]["run"]
        params = {"run": run, "layer": "fc", "dataset": "ood", "index": index}
        route = requests.get(f"{api}/image", params=params, timeout=30).json()["pushes"]
        view = f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer=fc"
        url = f"{view}&p.deephys.view=image&p.deephys.image={index}%40ood"
        page, frame, errors = open_tab(browser, base, url=url, ready=".pushes-panel")
        columns = frame.locator(".pushes-panel .push-column")
        assert columns.count() == 2  # towards the prediction, towards the label
        for column, key in zip(
            (columns.nth(0), columns.nth(1)), ("predicted", "label"), strict=True
        ):
            shown = [int(item.get_attribute("data-neuron")) for item in column.locator("li").all()]
            assert shown == [row["neuron"] for row in route[key]]
        assert f"{route['margin']:.3f} above" in frame.locator(".pushes-panel .note").inner_text()

        page.goto(f"{view}&p.deephys.view=neuron&p.deephys.neuron=0")
        frame = page.frame_locator("iframe")
        line = frame.locator(".neuron-view .zeroing").first
        line.wait_for()
        body = requests.get(
            f"{api}/neuron", params={"run": run, "layer": "fc", "neuron": 0}, timeout=30
        )
        zeroing = body.json()["datasets"][0]["zeroing"]
        assert line.inner_text().startswith(f"zeroed: {zeroing['changed']} of 24")

        a, b = int(labels[index]), int(predictions[index])
        page.goto(f"{view}&p.deephys.view=category&p.deephys.category={a}:{b}:0@ood")
        frame = page.frame_locator("iframe")
        frame.locator(".pair-pushes li").first.wait_for()
        shown = [
            int(item.get_attribute("data-neuron"))
            for item in frame.locator(".pair-pushes li").all()
        ]
        params = {"run": run, "layer": "fc", "dataset": "ood", "label": a, "pred": b}
        route = requests.get(f"{api}/category", params=params, timeout=30).json()["pushes"]
        assert shown == [row["neuron"] for row in route["neurons"]]

        page.goto(
            f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer=features.0"
            f"&p.deephys.view=image&p.deephys.image={index}%40ood"
        )
        frame = page.frame_locator("iframe")
        note = frame.locator(".image-view .message", has_text="What pushed the prediction")
        note.wait_for()
        assert "feeds no linear head" in note.inner_text()
        assert errors == []
