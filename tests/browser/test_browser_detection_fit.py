"""The overview's detection table and calibration line in a real headless Chromium
against a live tensorboard: where the detectors on features were fitted, why a head
detector has no numbers, and each set's calibration, in the route's numbers."""

from __future__ import annotations

import requests
import torch
from browser_tab import open_tab, running_browser, skip_without_chromium
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback

skip_without_chromium()


def test_the_overview_says_where_detectors_were_fitted_and_how_calibrated(tmp_path):
    torch.manual_seed(0)
    callback = DeephysCallback(
        layers=["fc", "features.0"],
        ood_detectors=["msp", "knn", "react"],
        reference=loader(random_set(16, 7)),
    )
    t = trainer(tmp_path, [callback], max_epochs=1)
    val = {"ind": loader(random_set(20, 1)), "ood": loader(random_set(20, 2))}
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    with running_browser() as browser, running_tensorboard(tmp_path, load_fast=True) as base:
        api = f"{base}/data/plugin/deephys"
        run = requests.get(f"{api}/runs", timeout=10).json()["runs"][0]["run"]
        summary = requests.get(f"{api}/summary", params={"run": run, "layer": "fc"}, timeout=30)
        ood = next(d for d in summary.json()["datasets"] if d["name"] == "ood")
        url = f"{base}/#deephys&p.deephys.run={run}&p.deephys.view=overview&p.deephys.layer=fc"
        page, frame, errors = open_tab(browser, base, url=url, ready=".overview-view .card")
        card = frame.locator('.card[data-dataset="ood"]')
        assert card.locator(".fit-note").all_text_contents() == [
            "detectors on features fitted on the reference set (16 images); every InD image scored"
        ]
        # features.0 (4 channels) feeds no head: react has no numbers there, and says why
        note = card.locator(".detector-note").inner_text()
        assert note.startswith("react: layer 'features.0' feeds no linear head")
        cells = card.locator('tr[data-detector="react"] td').all_text_contents()
        assert "n/a" in cells and any(c[0].isdigit() for c in cells)  # fc has numbers
        line = card.locator(".calibration").inner_text()
        calibration = ood["calibration"]
        assert f"ECE {calibration['ece']:.3f}" in line
        assert f"AURC {calibration['aurc']:.3f}" in line
        points = 100 * calibration["accuracy_drop"]
        side = "below" if points >= 0 else "above"
        assert f"accuracy {abs(points):.1f} points {side} InD" in line
        assert errors == []
