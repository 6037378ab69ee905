"""The report of ``deephys-lightning report`` in a real headless Chromium, opened from
disk as a file someone was sent: it shows every image, logs no error, and asks the
network for nothing, with JavaScript on and off."""

from __future__ import annotations

import pytest
from browser_tab import running_browser, skip_without_chromium
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback
from deephys_lightning.report import write_report

skip_without_chromium()

HOSTILE = '<img src="https://example.com/x.png">&<script>alert(1)</script>'


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("browser_report")
    run = trainer(tmp_path, [DeephysCallback(layer="fc", class_names=["a", "<b>b</b>", "c"])])
    run.fit(
        TinyNet(),
        loader(random_set(24, 0)),
        val_dataloaders={"ind": loader(random_set(12, 1)), HOSTILE: loader(random_set(9, 2))},
    )
    return write_report(
        run.logger.log_dir,
        tmp_path / "report.html",
        images=[(0, HOSTILE), (1, "ind")],
        categories=[1],
    )


@pytest.fixture(scope="module")
def browser():
    with running_browser() as browser:
        yield browser


@pytest.mark.parametrize("javascript", [True, False])
def test_the_report_renders_offline_from_a_file(browser, report_file, javascript):
    page = browser.new_page(java_script_enabled=javascript)
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.on("request", lambda request: requests.append(request.url))
    url = report_file.resolve().as_uri()
    page.goto(url, wait_until="load")
    images = page.locator("img")
    count = images.count()
    assert count > 10
    loaded = images.evaluate_all(
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert loaded == count
    assert page.locator("script").count() == 0
    assert HOSTILE in page.locator("h3", has_text="Image 0 of").first.inner_text()
    assert [u for u in requests if u != url and not u.startswith("data:")] == []
    assert errors == []
    page.close()
