"""Numbers derived from recorded arrays: one implementation of each, NumPy only.

The writer (``deephys_lightning.summary`` and the heavy kernels of
``deephys_lightning.metrics``), the read model (``tb_plugin.read_model``, behind
``read_log`` and every route of the plugin) and the ``scores`` command call these
functions, so a number means the same wherever it is shown. No torch, no Lightning:
the TensorBoard plugin imports this module.

Example::

    >>> import numpy as np
    >>> normalize(np.array([1.0, 3.0]), np.array([2.0, 0.0])).tolist()   # neuron 1 is dead
    [0.5, nan]
    >>> descending_order(np.array([1.0, np.nan, 3.0, 3.0])).tolist()      # ties: lower first
    [2, 3, 0, 1]
    >>> scores = OODScores(np.array([1.0, -1.0]), np.array([0.5, np.nan]), np.array([1.0, 2.0]))
    >>> scores.summary()["spurious_undefined"]
    1
"""

from __future__ import annotations

import dataclasses

import numpy as np


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (in float64); NaN when there are none."""
    values = np.asarray(values)
    finite = values[np.isfinite(values)]
    return float(finite.mean(dtype=np.float64)) if finite.size else float("nan")


def alive_divisor(ind_max: np.ndarray) -> np.ndarray:
    """The InD maxima as a float32 divisor: NaN where a maximum is not a positive finite
    number (a neuron dead on InD, or one that saw NaN or infinity)."""
    ind_max = np.asarray(ind_max, dtype=np.float32)
    alive = np.isfinite(ind_max) & (ind_max > 0)
    return np.where(alive, ind_max, np.nan).astype(np.float32)


def normalize(values: np.ndarray, ind_max: np.ndarray) -> np.ndarray:
    """Activations divided by the InD maximum of their neuron: the normalized activation
    the views show. ``ind_max`` broadcasts against ``values`` (a neuron's maximum
    for its values, or ``[M]`` for ``[..., M]``); dead neurons give NaN."""
    return (np.asarray(values, dtype=np.float32) / alive_divisor(ind_max)).astype(np.float32)


def descending_order(values: np.ndarray, n: int | None = None) -> np.ndarray:
    """Indices of ``values`` (1-D), highest first, ties to the lower index, NaN last.

    The ranking rule of every top list (top images per neuron, top neurons per image,
    pair or category). ``deephys_lightning.metrics`` applies the same rule to whole
    matrices with torch's kernels; its tests compare the two. Returns the first ``n``.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"descending_order takes a 1-D array, got shape {values.shape}")
    # NumPy sorts NaN last and a stable sort keeps the lower index first among ties;
    # negating turns "highest first" into an ascending sort (and keeps NaN last).
    order = np.argsort(-values.astype(np.float64), kind="stable")
    return order if n is None else order[:n]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class): int64 ``[C, C]``, rows are true classes.

    Raises:
        ValueError: lengths differ, or a label or prediction is outside ``[0, C)``.
    """
    labels = check_classes(labels, num_classes, "labels")
    predictions = check_classes(predictions, num_classes, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must have the same length, got {len(labels)} "
            f"and {len(predictions)}"
        )
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """The fraction of images predicted as their label; NaN for an empty set."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float(np.mean(labels == predictions)) if len(labels) else float("nan")


def check_classes(values: np.ndarray, num_classes: int, name: str = "labels") -> np.ndarray:
    """``values`` as int64 class indices, checked: 1-D integers in ``[0, num_classes)``.

    Raises:
        ValueError: naming ``name``, what it got and what is allowed.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values from {values.min()} "
            f"to {values.max()}"
        )
    return values.astype(np.int64, copy=False)


@dataclasses.dataclass(frozen=True)
class OODScores:
    """Per-neuron scores of one OOD set (float32 ``[M]`` each).

    ``novelty`` is raw (not clipped at 0), ``spurious`` is NaN where undefined and
    ``activation_ratio`` NaN for neurons dead on InD (see docs/concepts.md).
    """

    novelty: np.ndarray
    spurious: np.ndarray
    activation_ratio: np.ndarray

    def summary(self) -> dict[str, float]:
        """The headline numbers, logged as scalars ``deephys/<layer>/<ood>/<name>`` and
        shown in the tab and the ``scores`` table.

        Means are over neurons with a defined score; ``spurious_undefined`` counts
        the neurons without one. NaN where no neuron has a defined value.
        """
        defined = np.isfinite(self.novelty)
        positive = float(np.mean(self.novelty[defined] > 0)) if defined.any() else float("nan")
        return {
            "novelty_mean": finite_mean(self.novelty),
            "novelty_positive_fraction": positive,
            "spurious_mean": finite_mean(self.spurious),
            "spurious_undefined": int(np.sum(~np.isfinite(self.spurious))),
            "activation_ratio_mean": finite_mean(self.activation_ratio),
        }

    def densities(self, bins: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """The distributions the tab plots (the paper's Fig. 3), as :func:`density` gives
        them: of the positive novelty values (the paper's novelty score) and of the
        defined spurious scores over [0, 1]."""
        return {  # density() keeps the finite values
            "novelty": density(self.novelty[self.novelty > 0], bins=bins),
            "spurious": density(self.spurious, (0.0, 1.0), bins=bins),
        }


def density(
    values: np.ndarray, bounds: tuple[float, float] | None = None, bins: int = 20
) -> tuple[np.ndarray, np.ndarray, int]:
    """A histogram of the finite ``values`` normalised to a density (the paper's Fig. 3).

    ``bounds`` default to ``(0, max)``. Returns ``(density [bins], edges [bins + 1],
    count)``, ``count`` the finite values; both arrays are empty when there are none.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return np.empty(0), np.empty(0), 0
    low, high = bounds if bounds is not None else (0.0, float(values.max()) or 1.0)
    hist, edges = np.histogram(values, bins=bins, range=(low, high), density=True)
    return hist, edges, int(values.size)
