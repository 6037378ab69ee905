"""Images left out for NaN or infinite values, as the tab says it in a real headless
Chromium against a live tensorboard: the overview card and the neuron view give each
set's count and cause in the route's words; an image without finite classifier
outputs reads "prediction: none"."""

from __future__ import annotations

import requests
from browser_tab import open_tab, running_browser, skip_without_chromium
from non_finite_model import DRIVEN, LAYER, DrivenNet, driven_set
from tensorboard_process import running_tensorboard
from tiny_model import loader, trainer

from deephys_lightning import DeephysCallback

skip_without_chromium()


def test_the_tab_says_which_images_were_left_out_and_why(tmp_path):
    val = {"clean": loader(driven_set(1, None))}
    val.update({case: loader(driven_set(2 + i, case)) for i, case in enumerate(DRIVEN)})
    t = trainer(tmp_path, [DeephysCallback(layer=LAYER, top_k=4)], max_epochs=1)
    t.fit(DrivenNet(), loader(driven_set(0, None)), val_dataloaders=val)
    with running_browser() as browser, running_tensorboard(tmp_path, load_fast=False) as base:
        api = f"{base}/data/plugin/deephys"
        run = requests.get(f"{api}/runs", timeout=10).json()["runs"][0]["run"]
        summary = requests.get(
            f"{api}/summary", params={"run": run, "layer": LAYER}, timeout=30
        ).json()
        said = {d["name"]: [row["text"] for row in d["left_out"]] for d in summary["datasets"]}

        url = f"{base}/#deephys&p.deephys.run={run}&p.deephys.view=overview"
        page, frame, errors = open_tab(browser, base, url=url, ready=".overview-view .card")
        for name, texts in said.items():
            card = frame.locator(f'.card[data-dataset="{name}"]')
            assert card.locator(".left-out").all_text_contents() == texts
        assert said["clean"] == [] and len(said["noisy"]) == 2

        page.goto(f"{base}/#deephys&p.deephys.run={run}&p.deephys.view=neuron&p.deephys.neuron=0")
        frame = page.frame_locator("iframe")
        frame.locator('.neuron-view[data-neuron="0"]').wait_for()
        notes = frame.locator(".neuron-view .left-out")
        notes.first.wait_for()
        causes = [notes.nth(i).get_attribute("data-cause") for i in range(notes.count())]
        assert sorted(causes) == sorted(
            row["cause"] for d in summary["datasets"] for row in d["left_out"]
        )

        index = DRIVEN["exploding"][0]
        page.goto(
            f"{base}/#deephys&p.deephys.run={run}&p.deephys.view=image"
            f"&p.deephys.image={index}%40exploding"
        )
        frame = page.frame_locator("iframe")
        view = frame.locator(f'.image-view[data-dataset="exploding"][data-index="{index}"]')
        view.wait_for()
        assert view.locator(".no-prediction").inner_text().startswith("prediction: none")
        assert view.locator(".left-out").count() == 2  # activations, and no prediction
        assert errors == []
