"""Calibration and failure detection of a classifier on one set, from per-image
confidence, predictions and labels.

The confidence is the maximum softmax probability ``p``. The callback keeps it as the
log-odds ``log(p / (1 - p))`` of :func:`deephys_lightning.detection.logit_scores`
(``msp`` column): :func:`msp_confidence` turns it back into ``p`` (float64) for
binning, and :func:`failure_detection` ranks by the log-odds themselves, which keep
apart confident images whose ``p`` rounds to 1.0.

- :func:`expected_calibration_error`: ECE with equal-width bins and the L1 norm (Guo et
  al., 2017), binned as torchmetrics' ``binary_calibration_error`` bins: bin ``i``
  holds ``[i / B, (i + 1) / B)`` (edges from ``torch.linspace`` in float64), and
  ``p == 1`` exactly makes a bin of its own.
- :func:`failure_detection`: how well confidence tells right from wrong predictions:
  AUROC with the right predictions positive (ties count one half, as
  ``sklearn.metrics.roc_auc_score``), AURC (Geifman et al., 2019), and accuracy.
  AURC is the area under the risk-coverage curve: the error rate of the ``k`` most
  confident images, averaged over the coverages ``k / N``; images with equal
  confidence are accepted together, each coverage inside a tie group taking the error
  rate of the whole group (the step convention of scikit-learn's average precision).
  Lower is better; with an error rate ``e``, the best ranking (every wrong prediction
  below every right one) gives about ``e + (1 - e) log(1 - e)``.
- :func:`calibration_metrics`: all of it for one set from the msp log-odds,
  predictions and labels.

NaN confidences are left out (``unscored`` counts them). With only right or only wrong
predictions among the scored images the AUROC is NaN (there is nothing to tell apart);
ECE, AURC and accuracy are still defined. With no scored image everything is NaN.

Example::

    >>> log_odds = np.array([4.0, 2.0, 0.0, -1.0])     # p = 0.982, 0.881, 0.5, 0.269
    >>> metrics = calibration_metrics(log_odds, np.array([1, 2, 0, 0]), np.array([1, 2, 1, 0]))
    >>> metrics["accuracy"], metrics["failure_auroc"], round(metrics["aurc"], 4)
    (0.75, 0.6666666666666666, 0.1458)
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "CALIBRATION_BINS",
    "calibration_metrics",
    "expected_calibration_error",
    "failure_detection",
    "msp_confidence",
]

CALIBRATION_BINS = 15  # Guo et al. (2017) and torchmetrics' default


def msp_confidence(log_odds: np.ndarray | torch.Tensor) -> np.ndarray:
    """The maximum softmax probability ``p = sigmoid(log_odds)`` (float64) from the msp
    log-odds that :func:`deephys_lightning.detection.logit_scores` records.

    >>> msp_confidence(np.array([0.0, np.log(3.0), np.inf, np.nan]))
    array([0.5 , 0.75, 1.  ,  nan])
    """
    values = _float64(log_odds)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-values))


def expected_calibration_error(
    confidence: np.ndarray | torch.Tensor,
    correct: np.ndarray | torch.Tensor,
    bins: int = CALIBRATION_BINS,
) -> float:
    """ECE: the mean over images of ``|accuracy - mean confidence|`` of their bin, with
    ``bins`` equal-width bins of ``confidence`` (probabilities in ``[0, 1]``) and
    ``correct`` (booleans, per image). NaN confidences are left out; NaN when none
    is left.

    Raises:
        ValueError: ``bins < 1``, lengths that differ, or a confidence outside
            ``[0, 1]``.

    Example::

        >>> expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1]))
        0.4
    """
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    p, right = _scored(confidence, correct)
    if p.size == 0:
        return float("nan")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            "confidence must be probabilities in [0, 1]; convert msp log-odds with msp_confidence()"
        )
    # torch's linspace, not numpy's: their edges differ in the last bit (0.3 is an
    # edge with 10 bins in one and not the other), and confidences on an edge are common
    boundaries = torch.linspace(0.0, 1.0, int(bins) + 1, dtype=torch.float64).numpy()
    index = np.searchsorted(boundaries, p, side="right") - 1  # p == 1: a bin of its own
    confidence_sums = np.bincount(index, weights=p, minlength=bins + 1)
    right_sums = np.bincount(index, weights=right, minlength=bins + 1)
    return float(np.abs(right_sums - confidence_sums).sum() / p.size)


def failure_detection(
    confidence_score: np.ndarray | torch.Tensor, correct: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """How well ``confidence_score`` (higher = more confident: a probability, the msp
    log-odds or any score in the same order) tells right from wrong predictions
    (``correct``, per image).

    Returns a dict: ``failure_auroc`` (right positive; NaN with only right or only
    wrong predictions), ``aurc`` (area under the risk-coverage curve, ties accepted
    together), ``accuracy`` (of the scored images), ``images`` (scored) and
    ``unscored`` (NaN scores, left out). All NaN with no scored image.

    Raises:
        ValueError: lengths that differ.

    Example::

        >>> out = failure_detection(np.array([3.0, 2.0, 2.0, 1.0]), np.array([1, 0, 1, 0]))
        >>> out["failure_auroc"], out["aurc"], out["accuracy"], out["images"]
        (0.875, 0.29166666666666663, 0.5, 4)
    """
    total = _float64(confidence_score).size
    score, right = _scored(confidence_score, correct)
    n = score.size
    out: dict[str, float] = {"images": n, "unscored": total - n}
    if n == 0:
        return {
            "failure_auroc": float("nan"),
            "aurc": float("nan"),
            "accuracy": float("nan"),
            **out,
        }
    # tie groups from the most confident down
    _, group, counts = np.unique(-score, return_inverse=True, return_counts=True)
    right_per_group = np.bincount(group, weights=right, minlength=len(counts))
    accepted = np.cumsum(counts)
    errors = np.cumsum(counts - right_per_group)
    aurc = float(np.sum(counts / n * errors / accepted))
    positives = float(right.sum())
    negatives = n - positives
    auroc = float("nan")
    if positives and negatives:
        # Mann-Whitney: the right predictions' mean rank from the bottom, ties averaged
        ranks_from_top = accepted - (counts - 1) / 2.0  # mean position of each group
        ranks = (n + 1) - ranks_from_top  # ascending ranks
        rank_sum = float(np.sum(right_per_group * ranks))
        auroc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return {"failure_auroc": auroc, "aurc": aurc, "accuracy": positives / n, **out}


def calibration_metrics(
    msp_log_odds: np.ndarray | torch.Tensor,
    predictions: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bins: int = CALIBRATION_BINS,
) -> dict[str, float]:
    """ECE (``ece``, on ``sigmoid(msp_log_odds)``) and :func:`failure_detection`'s
    metrics (ranked by the log-odds) of one set, from the msp log-odds, the predicted
    classes and the labels (``[N]`` each).

    Raises:
        ValueError: lengths that differ or ``bins < 1``.
    """
    predicted = np.asarray(_numpy(predictions)).reshape(-1)
    truth = np.asarray(_numpy(labels)).reshape(-1)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"predictions ({predicted.size}) and labels ({truth.size}) must have one "
            "entry per image each"
        )
    correct = predicted == truth
    ece = expected_calibration_error(msp_confidence(msp_log_odds), correct, bins)
    return {"ece": ece, **failure_detection(msp_log_odds, correct)}


def _numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    return _numpy(values).astype(np.float64).reshape(-1)


def _scored(
    score: np.ndarray | torch.Tensor, correct: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """The non-NaN scores and their ``correct`` as float64 0 / 1."""
    values = _float64(score)
    right = _numpy(correct).reshape(-1)
    if right.shape != values.shape:
        raise ValueError(
            f"confidence ({values.size}) and correct ({right.size}) must have one entry "
            "per image each"
        )
    keep = ~np.isnan(values)
    return values[keep], right[keep].astype(bool).astype(np.float64)
