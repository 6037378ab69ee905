"""Each recorded set's calibration and failure detection, as a fit writes them: equal
to scikit-learn, torchmetrics and the AURC's definition on the exact maximum softmax
probability of the recorded logits; served by ``read_log``, the summary route and
``deephys-lightning scores --calibration``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_run import deephys_command
from plugin_client import plugin_client
from scipy.special import log_softmax
from sklearn.metrics import roc_auc_score
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer
from torchmetrics.functional.classification import multiclass_calibration_error

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.scores import calibration_table

PREFIX = "/data/plugin/deephys"


def _aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The risk-coverage area by its definition: for each image, the error rate of
    the images at least as confident (ties accepted together), averaged."""
    n = len(confidence)
    risks = [np.mean(~correct[confidence >= confidence[i]]) for i in range(n)]
    return float(np.mean(risks))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("calibration")
    torch.manual_seed(0)
    val = {"ind": loader(random_set(40, 1)), "ood": loader(random_set(30, 2))}
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    t.fit(TinyNet(), loader(random_set(24, 0)), val_dataloaders=val)
    return t.logger.log_dir


def test_each_set_has_the_reference_calibration_numbers(fitted):
    log = read_log(fitted)
    step = log.latest.step
    for name in ("ind", "ood"):
        found = log.calibration(name, step)
        logits = log.logits(name, step).astype(np.float64)
        labels = log.labels(name, step)
        probabilities = np.exp(log_softmax(logits, axis=1))
        confidence = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == labels
        assert found.images == len(labels) and found.unscored == 0
        assert found.accuracy == pytest.approx(correct.mean())
        ece = multiclass_calibration_error(
            torch.from_numpy(probabilities),
            torch.from_numpy(labels).long(),
            num_classes=NUM_CLASSES,
            n_bins=15,
            norm="l1",
        )
        assert found.ece == pytest.approx(float(ece), abs=1e-6)
        if correct.all() or not correct.any():
            assert np.isnan(found.failure_auroc)
        else:
            assert found.failure_auroc == pytest.approx(roc_auc_score(correct, confidence))
        assert found.aurc == pytest.approx(_aurc(confidence, correct), abs=1e-9)


def test_the_summary_route_and_the_scores_command_serve_it(fitted):
    log = read_log(fitted)
    step = log.latest.step
    client = plugin_client(fitted)
    run = client.get(f"{PREFIX}/runs").json["runs"][0]["run"]
    body = client.get(f"{PREFIX}/summary?run={run}&layer=fc").json
    ood = next(d for d in body["datasets"] if d["name"] == "ood")
    expected = log.calibration("ood", step)
    assert ood["calibration"]["ece"] == pytest.approx(expected.ece)
    ind_accuracy = log.calibration("ind", step).accuracy
    assert ood["calibration"]["accuracy_drop"] == pytest.approx(ind_accuracy - expected.accuracy)
    rows = [row for row in calibration_table(fitted) if row.step == step]
    assert [(row.dataset, row.role) for row in rows] == [("ind", "ind"), ("ood", "ood")]
    done = deephys_command("scores", fitted, "--calibration")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:6] == [
        "run",
        "step",
        "epoch",
        "dataset",
        "role",
        "accuracy",
    ]
    assert "failure AUROC" in done.stdout.splitlines()[0]
