"""Calibration and failure detection against torchmetrics (ECE), scikit-learn (AUROC)
and a direct loop over coverage thresholds (AURC), with ties and NaN confidences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from deephys_lightning.calibration import (
    calibration_metrics,
    expected_calibration_error,
    failure_detection,
    msp_confidence,
)
from deephys_lightning.detection import logit_scores


def direct_aurc(score: np.ndarray, correct: np.ndarray) -> float:
    """Mean over images of the error rate among the images at least as confident
    (a tie group is accepted whole)."""
    risks = []
    for threshold in score:
        accepted = score >= threshold
        risks.append(1 - correct[accepted].mean())
    return float(np.mean(risks))


def random_set(seed: int, n: int, *, ties: bool):
    rng = np.random.default_rng(seed)
    confidence = rng.beta(5, 2, n)
    correct = rng.random(n) < confidence  # roughly calibrated, plus noise
    if ties:
        confidence = np.round(confidence * 20) / 20
    return confidence, correct


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [15, 10, 1])
def test_ece_matches_torchmetrics_binary(seed, bins):
    confidence, correct = random_set(seed, 1000, ties=seed % 2 == 1)
    expected = binary_calibration_error(
        torch.from_numpy(confidence).double(),
        torch.from_numpy(correct).long(),
        n_bins=bins,
        norm="l1",
    )
    ece = expected_calibration_error(confidence, correct, bins)
    assert ece == pytest.approx(float(expected), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_ece_matches_torchmetrics_multiclass_from_msp_log_odds(seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((800, 10)) * rng.uniform(1, 4)
    labels = rng.integers(0, 10, 800)
    logits[np.arange(800), labels] += rng.uniform(0, 3)
    if seed == 3:  # some saturated images: p = 1 exactly, a bin of its own
        logits[:50, 0] += 60
    probabilities = softmax(logits, axis=1)
    expected = multiclass_calibration_error(
        torch.from_numpy(probabilities),
        torch.from_numpy(labels),
        num_classes=10,
        n_bins=15,
        norm="l1",
    )
    log_odds = logit_scores(torch.from_numpy(logits))[:, 0].double().numpy()
    metrics = calibration_metrics(log_odds, logits.argmax(1), labels)
    # the msp log-odds are float32: p agrees to ~1e-7, which moves no image across a bin
    assert metrics["ece"] == pytest.approx(float(expected), abs=1e-6)
    np.testing.assert_allclose(msp_confidence(log_odds), probabilities.max(1), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_failure_auroc_matches_sklearn_and_aurc_the_direct_loop(seed, ties):
    confidence, correct = random_set(
        seed, int(np.random.default_rng(seed).integers(20, 600)), ties=ties
    )
    out = failure_detection(confidence, correct)
    assert out["failure_auroc"] == pytest.approx(roc_auc_score(correct, confidence), abs=1e-12)
    assert out["aurc"] == pytest.approx(direct_aurc(confidence, correct), abs=1e-12)
    assert out["accuracy"] == pytest.approx(correct.mean())
    assert out["images"] == len(confidence) and out["unscored"] == 0


def test_aurc_bounds_and_ties():
    correct = np.array([1, 1, 1, 0, 0], dtype=bool)
    best = failure_detection(np.array([5.0, 4, 3, 2, 1]), correct)
    worst = failure_detection(np.array([1.0, 2, 3, 4, 5]), correct)
    flat = failure_detection(np.ones(5), correct)  # one tie group: the risk of all
    assert best["failure_auroc"] == 1.0 and worst["failure_auroc"] == 0.0
    assert best["aurc"] == pytest.approx((0 + 0 + 0 + 1 / 4 + 2 / 5) / 5)
    assert flat["aurc"] == pytest.approx(0.4) and flat["failure_auroc"] == 0.5
    assert best["aurc"] < flat["aurc"] < worst["aurc"]


def test_nan_confidences_are_left_out_and_counted():
    confidence, correct = random_set(0, 300, ties=False)
    dirty = confidence.copy()
    dirty[[3, 30, 299]] = np.nan
    keep = ~np.isnan(dirty)
    out = failure_detection(dirty, correct)
    clean = failure_detection(confidence[keep], correct[keep])
    assert out["unscored"] == 3 and out["images"] == 297
    for key in ("failure_auroc", "aurc", "accuracy"):
        assert out[key] == clean[key]
    assert expected_calibration_error(dirty, correct) == expected_calibration_error(
        confidence[keep], correct[keep]
    )
    none = failure_detection(np.full(4, np.nan), np.ones(4, dtype=bool))
    assert none["unscored"] == 4 and none["images"] == 0
    assert np.isnan([none["failure_auroc"], none["aurc"], none["accuracy"]]).all()
    assert np.isnan(expected_calibration_error(np.full(4, np.nan), np.ones(4)))


def test_all_right_or_all_wrong_gives_nan_auroc():
    score = np.array([0.9, 0.8, 0.3])
    right = failure_detection(score, np.ones(3, dtype=bool))
    wrong = failure_detection(score, np.zeros(3, dtype=bool))
    assert np.isnan(right["failure_auroc"]) and np.isnan(wrong["failure_auroc"])
    assert right["aurc"] == 0.0 and right["accuracy"] == 1.0
    assert wrong["aurc"] == 1.0 and wrong["accuracy"] == 0.0


def test_saturated_log_odds_rank_where_probabilities_tie():
    """Log-odds of 40 and 50 both give p = 1.0: ranked by the log-odds, the wrong one
    below the right one is still told apart."""
    log_odds = np.array([50.0, 40.0, 45.0, 0.5])
    correct = np.array([True, False, True, False])
    assert failure_detection(log_odds, correct)["failure_auroc"] == 1.0
    assert failure_detection(msp_confidence(log_odds), correct)["failure_auroc"] == 0.75


def test_torch_inputs_and_bad_arguments():
    out = calibration_metrics(
        torch.tensor([2.0, -1.0, 0.0]), torch.tensor([1, 0, 2]), torch.tensor([1, 1, 2])
    )
    assert out["accuracy"] == pytest.approx(2 / 3) and out["images"] == 3
    with pytest.raises(ValueError, match="one entry per image"):
        failure_detection(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="one entry per image"):
        calibration_metrics(np.ones(3), np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([2.0, 0.5]), np.ones(2))
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(np.array([0.5]), np.ones(1), bins=0)
