"""``write_report`` and ``deephys-lightning report``: one self-contained HTML file whose
numbers are read_log's, whose names from the log are text (never markup), and whose
images are inlined PNG files."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from cli_run import deephys_command
from PIL import Image
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.cli import main as cli_main
from deephys_lightning.report import ReportError, parse_images, parse_indices, write_report
from deephys_lightning.report.build import build_report
from deephys_lightning.report.render import render_html
from tensorboard_plugin_deephys.log import derived

HOSTILE = '<script>alert(1)</script>&"'
CLASSES = ["<b>cat</b>", "dog & <i>fox</i>", "<img src=x onerror=alert(1)>"]
VOID = {"meta", "img", "br", "hr", "link", "input"}
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4",
    "dl", "dt", "dd", "p", "nav", "a", "section", "table", "tr", "th", "td", "span", "b",
    "div", "figure", "img", "figcaption", "br", "footer",
}  # fmt: skip


class Page(HTMLParser):
    """Every element of a page with its attributes and the attributes of the elements
    around it, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None], list[dict[str, str | None]]]] = []
        self.text: list[str] = []
        self._open: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        self.tags.append((tag, found, [a for _, a in self._open]))
        if tag not in VOID:
            self._open.append((tag, found))

    def handle_endtag(self, tag):
        assert self._open and self._open[-1][0] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()

    def handle_data(self, data):
        self.text.append(data)

    def elements(self, tag, **attrs):
        return [
            (found, around)
            for name, found, around in self.tags
            if name == tag and all(found.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page._open == []  # every element closed
    return page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report_log")
    torch.manual_seed(0)
    run = trainer(tmp_path, [DeephysCallback(layer="fc", class_names=CLASSES)])
    run.fit(
        TinyNet(),
        loader(random_set(24, 0)),
        val_dataloaders={"ind": loader(random_set(12, 1)), HOSTILE: loader(random_set(9, 2))},
    )
    return run.logger.log_dir


@pytest.fixture(scope="module")
def report_file(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(run_dir, out, images=[(0, HOSTILE), (3, "ind")], categories=[0, 2])
    return out


@pytest.fixture(scope="module")
def page(report_file):
    return parsed(report_file.read_text(encoding="utf-8"))


def test_the_page_needs_nothing_from_elsewhere(report_file, page):
    text = report_file.read_text(encoding="utf-8")
    assert {tag for tag, _, _ in page.tags} <= ALLOWED_TAGS  # no script, link, iframe...
    assert "<script" not in text.lower() and "<link" not in text.lower()
    for _, attrs, _ in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:image/png;base64,", "#")), value
    policy = page.elements("meta", http_equiv="Content-Security-Policy")
    assert policy and "default-src 'none'" in policy[0][0]["content"]


def test_names_from_the_log_are_text_never_markup(report_file, page):
    text = report_file.read_text(encoding="utf-8")
    assert HOSTILE not in text and html.escape(HOSTILE) in text
    for name in CLASSES:
        assert name not in text
        assert html.escape(name) in text
    words = "".join(page.text)
    assert HOSTILE in words and all(name in words for name in CLASSES)
    # The names only ever come back as text or attribute values: no tag from them.
    assert not page.elements("script") and not page.elements("i")
    assert [a for a, _ in page.elements("img")] == [
        a for a, _ in page.elements("img") if a["src"].startswith("data:image/png;base64,")
    ]


def test_the_overview_shows_read_logs_numbers(run_dir, page):
    log = read_log(run_dir)
    for dataset in log.datasets:
        cells = {  # the cells of the set's row of the overview table
            found["data-name"]: found
            for found, around in page.elements("td")
            if found.get("data-name")
            and {"class": "sets"} in around
            and {"data-dataset": dataset} in around
        }
        expected = derived.accuracy(log.labels(dataset), log.predictions(dataset))
        assert float(cells["accuracy"]["data-value"]) == expected
        if dataset == log.datasets[0]:
            assert "spurious_mean" not in cells
            continue
        summary = log.scores("fc", dataset).summary()
        for name in ("spurious_mean", "novelty_mean", "activation_ratio_mean"):
            assert float(cells[name]["data-value"]) == pytest.approx(summary[name], rel=1e-12)
        assert int(cells["dead_neurons"]["data-value"]) == summary["dead_neurons"]
    words = "".join(page.text)
    ind = log.datasets[0]
    accuracy = derived.accuracy(log.labels(ind), log.predictions(ind))
    assert f"{100 * accuracy:.1f} %" in words
    spurious = log.scores("fc", HOSTILE).summary()["spurious_mean"]
    assert f"{spurious:.3f}" in words


def test_the_default_neurons_have_the_highest_mean_spurious_score(run_dir, page):
    log = read_log(run_dir)
    spurious = np.stack([log.scores("fc", ood).spurious for ood in log.datasets[1:]])
    scores = log.scores("fc", HOSTILE)
    with warnings.catch_warnings():  # a neuron without a defined score: NaN, said once
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.where(scores.dead, np.nan, np.nanmean(spurious, axis=0))
    expected = derived.descending_order(means, 3).tolist()
    shown = [int(a["data-neuron"]) for a, _ in page.elements("section", **{"class": "neuron"})]
    assert shown == expected
    for neuron in shown:  # each with its scores per OOD set
        spans = [
            a
            for a, around in page.elements("span", data_score="spurious")
            if any(x.get("data-neuron") == str(neuron) for x in around)
        ]
        assert len(spans) == 1
        value = scores.spurious[neuron]
        assert spans[0]["data-value"] == ("" if np.isnan(value) else repr(float(value)))


def test_every_image_is_an_inline_png_of_its_thumbnail(run_dir, page):
    log = read_log(run_dir)
    images = page.elements("img")
    assert len(images) > 10
    for attrs, around in images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        picture = Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix) :])))
        assert picture.format == "PNG"
        owner = next(a for a in reversed(around) if "data-dataset" in a and "data-index" in a)
        thumbnail = log.thumbnails(owner["data-dataset"])[int(owner["data-index"])]
        assert picture.size == (thumbnail.shape[1], thumbnail.shape[0])
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), thumbnail)


def test_image_and_category_sections_show_what_was_asked(run_dir, page):
    log = read_log(run_dir)
    sections = page.elements("section", **{"class": "image"})
    assert [(a["data-index"], a["data-dataset"]) for a, _ in sections] == [
        ("0", HOSTILE),
        ("3", "ind"),
    ]
    categories = page.elements("section", **{"class": "category"})
    assert [a["data-label"] for a, _ in categories] == ["0", "2"]
    labels, predictions = log.labels(HOSTILE), log.predictions(HOSTILE)
    shown = [
        a
        for a, around in page.elements("span")
        if "data-value" in a
        and any(x.get("data-label") == "2" for x in around)
        and any(x.get("data-dataset") == HOSTILE for x in around)
    ]
    expected = derived.accuracy(labels[labels == 2], predictions[labels == 2])
    assert shown[0]["data-value"] == ("" if np.isnan(expected) else repr(expected))


def test_an_image_without_a_prediction_says_none(run_dir):
    report = build_report(read_log(run_dir), images=[(1, "ind")])
    section = report.images[0]
    none = dataclasses.replace(section.picture, prediction=derived.NO_PREDICTION)
    report = dataclasses.replace(report, images=(dataclasses.replace(section, picture=none),))
    words = "".join(parsed(render_html(report)).text)
    assert "prediction: none (its classifier outputs are not finite)" in words


def test_the_command_writes_the_report(run_dir, tmp_path):
    out = tmp_path / "sub" / "r.html"
    done = deephys_command(
        "report", run_dir, "--out", str(out), "--neurons", "1,0", "--images", f"2@{HOSTILE}"
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and out.is_file()
    page = parsed(out.read_text(encoding="utf-8"))
    assert [a["data-neuron"] for a, _ in page.elements("section", **{"class": "neuron"})] == [
        "1",
        "0",
    ]


def test_a_neuron_out_of_range_is_one_line_naming_the_range(run_dir, tmp_path):
    out = tmp_path / "r.html"
    done = deephys_command("report", run_dir, "--out", str(out), "--neurons", "999")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "deephys-lightning report: neuron 999 is out of range: layer 'fc' has 5 neurons (0–4)"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "99@ind"], "image index 99 is out of range: 'ind' has 12 images"),
        (["--images", "0@nope"], "dataset 'nope' was not recorded"),
        (["--images", "nope"], "--images takes INDEX@DATASET"),
        (["--categories", "3"], "category 3 is out of range: there are 3 classes (0–2)"),
        (["--layer", "head"], "layer 'head' was not recorded"),
        (["--step", "-5"], "no Deephys record at step -5"),
        (["--neurons", "1,x"], "--neurons takes comma-separated integers"),
    ],
)
def test_bad_choices_are_one_line_errors(run_dir, tmp_path, capsys, args, message):
    out = tmp_path / "r.html"
    assert cli_main(["report", run_dir, "--out", str(out), *args]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("deephys-lightning report: ")
    assert message in said[0]
    assert not out.exists()


def test_a_log_without_thumbnails_says_so(tmp_path):
    run = trainer(tmp_path, [DeephysCallback(layer="fc", thumbnails=False)], max_epochs=1)
    run.fit(
        TinyNet(),
        loader(random_set(12, 0)),
        val_dataloaders={"a": loader(random_set(8, 1)), "b": loader(random_set(8, 2))},
    )
    out = write_report(run.logger.log_dir, tmp_path / "r.html", images=[(0, "b")])
    page = parsed(out.read_text(encoding="utf-8"))
    assert page.elements("img") == []
    notes = [t for t in page.text if t.startswith("no thumbnails of 'a' are shown")]
    assert len(notes) == 1


def test_choices_are_parsed_from_text():
    assert parse_indices("3, 17,3", "--neurons") == (3, 17)
    assert parse_images("5@permuted, 0@a,b,2@c") == ((5, "permuted"), (0, "a,b"), (2, "c"))
    with pytest.raises(ReportError, match="--categories takes comma-separated integers"):
        parse_indices("a", "--categories")
    with pytest.raises(ReportError, match="INDEX@DATASET"):
        parse_images("5@")


def test_images_left_out_for_values_that_are_not_finite_are_said(tmp_path):
    from non_finite_model import DRIVEN, LAYER, DrivenNet, driven_set

    val = {"clean": loader(driven_set(1, None)), "exploding": loader(driven_set(2, "exploding"))}
    run = trainer(tmp_path, [DeephysCallback(layer=LAYER, top_k=4)], max_epochs=1)
    run.fit(DrivenNet(), loader(driven_set(0, None)), val_dataloaders=val)
    index = DRIVEN["exploding"][0]
    log = read_log(run.logger.log_dir)
    assert log.predictions("exploding")[index] == derived.NO_PREDICTION
    out = write_report(run.logger.log_dir, tmp_path / "r.html", images=[(index, "exploding")])
    words = "".join(parsed(out.read_text(encoding="utf-8")).text)
    for row in log.latest.left_out:  # the overview's notes, in the tab's words
        assert row.describe() in words
    assert "prediction: none (its classifier outputs are not finite)" in words
