"""The overview of a run with ImageNet-21k's 21,841 classes, in a real headless
Chromium against a live tensorboard: no matrix (477 million cells), the most confused
pairs instead, every pair a page at a time, each opening its confusion set; checked
against numpy's count of the (label, prediction) pairs."""

from __future__ import annotations

import numpy as np
import pytest
from browser_tab import open_tab, running_browser, skip_without_chromium
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard_process import running_tensorboard

from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log.metadata import Record

skip_without_chromium()

CLASSES = 21_841
IMAGES = {"ind": 1500, "ood": 1200}


@pytest.fixture(scope="module")
def many_classes_log(tmp_path_factory):
    """One step with 21,841 classes; each set's (labels, predictions)."""
    logdir = tmp_path_factory.mktemp("many_classes_tab")
    rng = np.random.default_rng(7)
    sink = EventFileSink(EventFileWriter(str(logdir / "imagenet21k")))
    recordings, truth = {}, {}
    for name, n in IMAGES.items():
        labels = rng.integers(0, CLASSES, n)
        labels[: n // 5] = rng.integers(10, 14, n // 5)  # a few crowded classes
        wrong = np.where(rng.random(n) < 0.5, rng.integers(0, 3, n), rng.integers(0, CLASSES, n))
        predictions = np.where(rng.random(n) < 0.5, labels, wrong)
        truth[name] = (labels, predictions)
        recordings[name] = DatasetRecording(
            labels=labels,
            predictions=predictions,
            activations={"fc": np.maximum(rng.normal(size=(n, 8)), 0).astype(np.float16)},
            thumbnails=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        )
    record = Record(
        step=3,
        epoch=0,
        layers=("fc",),
        datasets=tuple(IMAGES),
        class_names=tuple(f"synset {i}" for i in range(CLASSES)),
        num_images=dict(IMAGES),
        top_k=4,
    )
    write_record(sink, record, recordings, log_dir=str(logdir / "imagenet21k"))
    sink.close()
    return logdir, truth


def _confused(labels: np.ndarray, predictions: np.ndarray) -> list[tuple[int, int, int]]:
    """The off-diagonal cells, most images first, ties to the lower label, then pred."""
    wrong = labels != predictions
    pairs, counts = np.unique(
        np.stack([labels[wrong], predictions[wrong]], axis=1), axis=0, return_counts=True
    )
    cells = [(int(a), int(b), int(n)) for (a, b), n in zip(pairs, counts, strict=True)]
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))


def _rows(card) -> list[tuple[int, int, int]]:
    return [
        (int(label), int(pred), int(count))
        for label, pred, count in card.locator("table.confused-pairs tr[data-label]").evaluate_all(
            "rows => rows.map(r => [r.dataset.label, r.dataset.pred, r.lastChild.textContent])"
        )
    ]


def test_overview_of_21841_classes_lists_the_most_confused_pairs(many_classes_log):
    logdir, truth = many_classes_log
    with running_browser() as browser, running_tensorboard(logdir, load_fast=True) as base:
        page, frame, errors = open_tab(browser, base)
        frame.locator("#view-overview").click()
        for name, (labels, predictions) in truth.items():
            card = frame.locator(f'.card[data-dataset="{name}"]')
            card.locator("table.confused-pairs tr[data-label]").first.wait_for()
            confused = _confused(labels, predictions)
            assert card.locator("table.matrix").count() == 0
            note = card.locator(".confusion-note").text_content()
            assert f"{CLASSES} classes" in note
            assert f"{int(np.sum(labels != predictions))} misclassified images" in note
            assert f"in {len(confused)} pairs" in note
            assert _rows(card) == confused[:20]
            first = card.locator("table.confused-pairs tr[data-label]").first
            a, b, _ = confused[0]
            assert first.locator("td").all_text_contents()[:2] == [f"synset {a}", f"synset {b}"]
        # every pair, 100 a page, from the confusion route
        labels, predictions = truth["ood"]
        confused = _confused(labels, predictions)
        pages = -(-len(confused) // 100)
        card = frame.locator('.card[data-dataset="ood"]')
        card.locator('button[data-page="all"]').click()
        card.locator(f'.pairs-pager span:has-text("page 1 of {pages}")').wait_for()
        assert _rows(card) == confused[:100]
        card.locator('.pairs-pager button[data-page="next"]').click()
        card.locator(f'.pairs-pager span:has-text("page 2 of {pages}")').wait_for()
        assert _rows(card) == confused[100:200]
        assert card.locator(".table-count").text_content() == (
            f"pairs 101–{min(200, len(confused))} of {len(confused)} shown"
        )
        # a pair opens its confusion set in the category view
        a, b, count = confused[100]
        card.locator(f'tr[data-label="{a}"][data-pred="{b}"]').click()
        heading = frame.locator('.category-view h2:has-text("predicted as")')
        heading.wait_for()
        assert heading.text_content() == (
            f"label synset {a} predicted as synset {b} in ood — {count} images, step 3"
        )
        assert errors == []
        page.close()
