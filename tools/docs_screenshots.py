"""The screenshots of docs/views.md's newer views, taken from the demo's log in a real
headless Chromium against a real tensorboard (the same helpers the browser tests use).

    python tools/docs_screenshots.py                   # trains the demo into a temp dir
    python tools/docs_screenshots.py --logdir DIR      # a demo log trained already

Writes docs/images/deephys-compare.png (the overview, the first recorded epoch
compared with the last), deephys-pushes.png (a wrong permuted-colour prediction: what
pushed it) and deephys-category-sets.png (that image's class across every set).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from browser_tab import open_tab, running_browser  # noqa: E402
from tensorboard_process import running_tensorboard  # noqa: E402

from deephys_lightning import read_log  # noqa: E402

LAYER = "backbone.fc1"
IMAGES = ROOT / "docs" / "images"


def _shoot(logdir: Path) -> None:
    runs = sorted(p for p in logdir.glob("*/version_*") if p.is_dir())
    log = read_log(runs[-1])
    first, last = log.steps[0], log.steps[-1]
    labels, predictions = log.labels("permuted", last), log.predictions("permuted", last)
    wrong = np.flatnonzero(labels != predictions)
    index = int(wrong[0])
    with running_browser() as browser, running_tensorboard(logdir, load_fast=False) as base:
        run = requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"][-1]["run"]
        view = f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer={LAYER}"
        compare = f"&p.deephys.step={first}&p.deephys.compare={run}%40{last}"
        page, frame, _ = open_tab(
            browser,
            base,
            url=f"{view}{compare}&p.deephys.view=overview",
            ready=".overview-view .card",
        )
        page.wait_for_timeout(500)
        page.screenshot(path=str(IMAGES / "deephys-compare.png"))
        page.goto(f"{view}&p.deephys.view=image&p.deephys.image={index}%40permuted")
        page.frame_locator("iframe").locator(".pushes-panel li").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(IMAGES / "deephys-pushes.png"))
        label = int(labels[index])
        page.goto(f"{view}&p.deephys.view=category&p.deephys.category={label}::0@colored")
        page.frame_locator("iframe").locator(".category-sets .set-column").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(IMAGES / "deephys-category-sets.png"))
    print(f"wrote {IMAGES}/deephys-{{compare,pushes,category-sets}}.png from {runs[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, help="a demo log trained already")
    args = parser.parse_args()
    if args.logdir is not None:
        _shoot(args.logdir)
        return
    from deephys_lightning.demo.cli import train_demo

    with tempfile.TemporaryDirectory() as folder:
        train_demo(folder, quiet=True)
        _shoot(Path(folder))


if __name__ == "__main__":
    main()
