"""The Deephys tab in a real headless Chromium: Debian's browser, driven by Playwright.

Example::

    skip_without_chromium()  # at the top of a test module

    @pytest.fixture(scope="module")
    def browser():
        with running_browser() as browser:
            yield browser

    page, frame, errors = open_tab(browser, base, ready=".neuron-view")
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def skip_without_chromium() -> None:
    """Skip the calling test module where Debian's chromium is not installed (fail
    under CI, whose set-up must install it) or Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
    pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def running_browser():
    """A headless Chromium, closed on exit."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


def open_tab(browser, base, *, url=None, ready=".neuron-view figure img"):
    """A page in a new browser context on ``url`` (default: the tab), once ``ready``
    shows; and the list of the tab's console errors, page errors and dialogs."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: (
            errors.append(f"{msg.location.get('url')}: {msg.text}")
            if msg.type == "error" and "/data/plugin/deephys" in (msg.location.get("url") or "")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.goto(url or f"{base}/#deephys", wait_until="domcontentloaded")
    frame = page.frame_locator("iframe")
    frame.locator(ready).first.wait_for(timeout=60_000)
    return page, frame, errors


def loaded_images(frame, view=".neuron-view") -> int:
    """How many images in ``view`` have loaded."""
    return frame.locator(view).evaluate(
        "el => [...el.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length"
    )


def drawn_maps(frame, body) -> list[tuple[dict, list[tuple[float, float, float]]]]:
    """Check that the neuron view shows each top image of the ``neuron`` route's answer
    ``body`` with its map drawn over it: a visible overlay of the map's shape (one unit
    a cell) whose
    cells' opacities are the tab's (0.75 for the largest value of the answer, in
    proportion below it). Returns each image of the answer with its overlay's cells
    ``(x, y, opacity)``, for checks of where the cells are."""
    import numpy as np

    maps = [image["map"] for d in body["datasets"] for image in d["images"]]
    scale = max(v for m in maps for v in m["values"] if v is not None)
    drawn = []
    for entry in body["datasets"]:
        figures = frame.locator(f'.column[data-dataset="{entry["name"]}"] > .grid figure')
        assert figures.count() == len(entry["images"])
        for figure, image in zip(figures.all(), entry["images"], strict=True):
            overlay = figure.locator("svg.map")
            assert overlay.is_visible()
            h, w = image["map"]["shape"]
            assert overlay.get_attribute("data-shape") == f"{h}x{w}"
            assert overlay.get_attribute("viewBox") == f"0 0 {w} {h}"  # a cell a unit
            cells = overlay.locator("rect").evaluate_all(
                "rs => rs.map(r => [Number(r.getAttribute('x')), Number(r.getAttribute('y')),"
                " Number(r.getAttribute('fill-opacity'))])"
            )
            expected = [0.75 * max(0.0, min(1.0, v / scale)) for v in image["map"]["values"]]
            np.testing.assert_allclose([o for _, _, o in cells], expected, atol=1e-3)
            drawn.append((image, cells))
    return drawn
