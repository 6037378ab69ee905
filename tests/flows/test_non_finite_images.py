"""Images with NaN or infinite values are kept apart, counted with their cause, and
never turn a set's scores into NaN or count as a prediction of class 0.

One fit records a model whose recorded layer and classifier outputs can be driven,
image by image, to each cause the record tells apart: NaN pixels (``input``), an
infinite layer output (``activation``), a layer output finite in float32 but beyond
float16's range (``float16``) and classifier outputs that alone are not finite
(``logits``). Each case is on its own OOD set; the InD set is clean.
"""

from __future__ import annotations

import numpy as np
import pytest
from cli_run import deephys_command
from non_finite_model import DRIVEN, LAYER, DrivenNet, driven_set
from plugin_client import plugin_client
from scipy import stats
from tiny_model import NUM_CLASSES, loader, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.scores import left_out_notes, score_table
from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.metadata import LeftOut

PREFIX = "/data/plugin/deephys"
# The rows the record must hold.
EXPECTED = {
    LeftOut("noisy", None, "input", 4),
    LeftOut("noisy", LAYER, "input", 4),
    LeftOut("exploding", None, "logits", 3),
    LeftOut("exploding", LAYER, "activation", 3),
    LeftOut("overflow", LAYER, "float16", 2),
    LeftOut("no_logits", None, "logits", 2),
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("non_finite")
    val = {"clean": loader(driven_set(1, None))}
    val.update({case: loader(driven_set(2 + i, case)) for i, case in enumerate(DRIVEN)})
    with pytest.warns(UserWarning, match="NaN or infinite"):
        t = trainer(tmp_path, [DeephysCallback(layer=LAYER, top_k=4)], max_epochs=1)
        t.fit(DrivenNet(), loader(driven_set(0, None)), val_dataloaders=val)
    return t.logger.log_dir


def test_the_record_counts_each_cause_per_set_and_layer(fitted):
    log = read_log(fitted)
    assert set(log.latest.left_out) == EXPECTED


def test_images_without_finite_logits_have_no_prediction_and_no_accuracy(fitted):
    log = read_log(fitted)
    step = log.latest.step
    for case in ("noisy", "exploding", "no_logits"):
        predictions, labels = log.predictions(case, step), log.labels(case, step)
        assert (predictions[DRIVEN[case]] == derived.NO_PREDICTION).all()
        others = np.setdiff1d(np.arange(len(labels)), DRIVEN[case])
        assert (predictions[others] >= 0).all()
        logits = log.logits(case, step)
        np.testing.assert_array_equal(predictions[others], logits[others].argmax(axis=1))
        assert derived.accuracy(labels, predictions) == pytest.approx(
            np.mean(labels[others] == predictions[others])
        )
        matrix = derived.confusion_matrix(labels, predictions, NUM_CLASSES)
        assert matrix.sum() == len(others)
        classes, _ = log.top_predictions(case, step)
        assert (classes[DRIVEN[case]] == derived.NO_PREDICTION).all()
    # an overflow of the stored activations leaves the prediction alone
    assert (log.predictions("overflow", step) >= 0).all()


def _reference_scores(ind: np.ndarray, ind_y: np.ndarray, ood: np.ndarray, ood_y: np.ndarray):
    """Novelty and spurious score by the paper's formulas, with NumPy and SciPy, on
    the given rows."""

    def means(acts, labels):
        return np.stack([acts[labels == c].astype(np.float64).mean(0) for c in range(NUM_CLASSES)])

    ind_means, ood_means = means(ind, ind_y), means(ood, ood_y)
    ind_max = ind.astype(np.float64).max(0)
    novelty = (ind_means.max(0) - ood_means.max(0)) / ind_max
    spurious = np.array(
        [
            1 - abs(stats.spearmanr(ind_means[:, n], ood_means[:, n]).statistic)
            for n in range(ind.shape[1])
        ]
    )
    return novelty, spurious


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # dead neurons
def test_scores_leave_the_images_out_and_stay_finite(fitted):
    log = read_log(fitted)
    step = log.latest.step
    ind = log.activations(LAYER, "clean", step)
    ind_y = log.labels("clean", step)
    for case in DRIVEN:
        acts, labels = log.activations(LAYER, case, step), log.labels(case, step)
        finite = np.isfinite(acts).all(axis=1)
        if case in ("noisy", "exploding", "overflow"):
            assert not finite[DRIVEN[case]].any()  # the matrix keeps every row as recorded
        scores = log.scores(LAYER, case, step)
        novelty, spurious = _reference_scores(ind, ind_y, acts[finite], labels[finite])
        np.testing.assert_allclose(scores.novelty, novelty, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores.spurious, spurious, rtol=1e-5, atol=1e-6)
        assert np.isfinite(log.maxima(LAYER, case, step)).all()
        assert np.isfinite(log.category_means(LAYER, case, step)).all()
        top = log.top_images(LAYER, case, step)[0]  # [M, k] image indices
        assert not np.isin(top, np.flatnonzero(~finite)).any()
        neurons, _ = log.image_top_neurons(LAYER, case, step)
        assert (neurons[~finite] == -1).all() and (neurons[finite] >= 0).all()


def test_scores_command_counts_and_explains(fitted):
    rows = {row.ood: row for row in score_table(fitted)}
    assert rows["noisy"].left_out == 4 + 4 and rows["overflow"].left_out == 2
    assert rows["no_logits"].left_out == 2
    assert all(np.isfinite(row.novelty_mean) for row in rows.values())
    notes = left_out_notes(fitted)
    assert any(
        "4 images of 'noisy' with NaN or infinite activations of 'scaled' left out: the "
        "input images hold NaN or infinite values" in note
        for note in notes
    )
    done = deephys_command("scores", fitted)
    assert done.returncode == 0, done.stderr
    assert "left out" in done.stdout.splitlines()[0]
    assert "beyond float16's range (65504)" in done.stdout
    assert "the classifier outputs are not finite" in done.stdout


def test_export_names_the_set_and_the_fix_then_skips_on_request(fitted, tmp_path):
    done = deephys_command("export", fitted, str(tmp_path / "out"))
    assert done.returncode == 2
    assert "dataset 'noisy': 4 of its 12 images hold NaN or infinite" in done.stderr
    assert "--skip-non-finite" in done.stderr
    done = deephys_command("export", fitted, str(tmp_path / "out"), "--skip-non-finite")
    assert done.returncode == 0, done.stderr
    assert "note: 4 images of 'noisy' with NaN or infinite values left out" in done.stdout
    assert (tmp_path / "out" / "noisy.test").exists()


def test_the_tab_says_what_was_left_out(fitted):
    client = plugin_client(fitted)
    run = client.get(f"{PREFIX}/runs").json["runs"][0]["run"]
    summary = client.get(f"{PREFIX}/summary?run={run}&layer={LAYER}").json
    by_name = {d["name"]: d for d in summary["datasets"]}
    assert by_name["clean"]["left_out"] == []
    texts = [row["text"] for row in by_name["noisy"]["left_out"]]
    assert any(t.startswith("4 images of 'noisy' with NaN or infinite activations") for t in texts)
    assert by_name["noisy"]["summary"]["novelty_mean"] is not None
    neuron = client.get(f"{PREFIX}/neuron?run={run}&layer={LAYER}&neuron=0").json
    overflow = next(d for d in neuron["datasets"] if d["name"] == "overflow")
    assert [row["cause"] for row in overflow["left_out"]] == ["float16"]
    index = DRIVEN["exploding"][0]
    image = client.get(f"{PREFIX}/image?run={run}&layer={LAYER}&dataset=exploding&index={index}")
    assert image.status_code == 200, image.json
    body = image.json
    assert body["prediction"] is None and body["top_predictions"] == []
    assert body["top_neurons"] == []
    assert {row["cause"] for row in body["left_out"]} == {"activation", "logits"}
