"""Numbers derived from recorded arrays: one implementation of each, NumPy only.

The writer (``deephys_lightning.writing`` and the heavy kernels of
``deephys_lightning.metrics``), the read model
(``tensorboard_plugin_deephys.log.read_model``, behind ``read_log`` and every route of
the plugin) and the ``scores`` command call these functions, so a number means the
same wherever it is shown. No torch, no Lightning:
the TensorBoard plugin imports this module.

Example::

    >>> import numpy as np
    >>> normalize(np.array([1.0, 3.0]), np.array([2.0, 0.0])).tolist()   # neuron 1 is dead
    [0.5, nan]
    >>> descending_order(np.array([1.0, np.nan, 3.0, 3.0])).tolist()      # ties: lower first
    [2, 3, 0, 1]
    >>> scores = OODScores(novelty_raw=np.array([1.0, -1.0, 0.0]),
    ...                    spurious=np.array([0.5, np.nan, 0.0]),
    ...                    activation_ratio=np.array([1.0, 2.0, np.nan]),
    ...                    ind_max=np.array([2.0, 4.0, 0.0]))     # neuron 2 is dead
    >>> scores.novelty.tolist()
    [0.5, -0.25, nan]
    >>> scores.summary()["spurious_undefined"], scores.summary()["dead_neurons"]
    (1, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# The prediction (PREDICTIONS, TOP_CLASSES) of an image whose classifier outputs are not
# finite: no class. Such images are left out of the accuracy and the confusion matrix.
NO_PREDICTION = -1


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


@dataclasses.dataclass(frozen=True)
class RankedRows:
    """Row by row, the first ``n`` entries of :func:`descending_order` and their values
    (``[R, n]`` each), e.g. every category's top neurons at once."""

    order: np.ndarray  # int64 column indices, highest value first
    values: np.ndarray  # the values ranked, float32 (float64 for wider input)

    @property
    def nbytes(self) -> int:
        """What it holds in memory (the plugin's cache counts it)."""
        return int(self.order.nbytes + self.values.nbytes)


def rank_rows(
    values: np.ndarray,
    n: int,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    block_elements: int = 1 << 22,
) -> RankedRows:
    """:func:`descending_order` of every row of ``values`` (``[R, K]``), its first ``n``,
    at once: highest first, ties to the lower column, NaN last. ``prepare`` maps a
    block of rows to the values ranked (e.g. :func:`normalize` by the InD maxima).

    The same ranking as a loop of :func:`descending_order` (the tests compare them), in
    ``O(R * K)`` by one partition per row instead of a sort, over blocks of about
    ``block_elements`` values: memory beyond the result stays bounded whatever ``R``
    and ``K`` (a category-means matrix of 21,841 classes x 2,048 neurons is 179 MB).

    >>> ranked = rank_rows(np.array([[1.0, 3.0, 3.0], [np.nan, 0.0, 2.0]]), 2)
    >>> ranked.order.tolist(), ranked.values.tolist()
    ([[1, 2], [2, 1]], [[3.0, 3.0], [2.0, 0.0]])
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"rank_rows takes a 2-D array, got shape {values.shape}")
    rows, width = values.shape
    n = max(0, min(n, width))
    dtype = np.float64 if values.dtype.itemsize > 4 else np.float32
    order = np.empty((rows, n), dtype=np.int64)
    ranked = np.empty((rows, n), dtype=dtype)
    step = max(1, block_elements // max(width, 1))
    for start in range(0, rows if n else 0, step):
        block = np.ascontiguousarray(values[start : start + step])
        block = np.asarray(block if prepare is None else prepare(block), dtype=dtype)
        found = _top_of_rows(-block, n)  # ascending keys: NaN sorts last, as in argsort
        order[start : start + step] = found
        ranked[start : start + step] = np.take_along_axis(block, found, axis=1)
    return RankedRows(order=order, values=ranked)


def _top_of_rows(keys: np.ndarray, n: int) -> np.ndarray:
    """Per row, the columns of the ``n`` lowest ``keys`` in a stable ascending sort
    (NaN last, ties to the lower column): those at most the ``n``-th lowest (found by a
    partition); in a row with more of them than places (ties, or fewer than ``n``
    numbers), those below it, then as many of the rest as fit, lowest column first."""
    kth = np.partition(keys, n - 1, axis=1)[:, n - 1 : n]
    chosen = keys <= kth
    short = np.isnan(kth[:, 0])  # fewer than n numbers: every entry is in the running
    chosen[short] = True
    crowded = np.flatnonzero(np.count_nonzero(chosen, axis=1) > n)
    if len(crowded):
        some, bound = keys[crowded], kth[crowded]
        numbers = ~np.isnan(some)
        below = (some < bound) | (np.isnan(bound) & numbers)
        tied = (some == bound) | (np.isnan(bound) & ~numbers)
        room = n - np.count_nonzero(below, axis=1)[:, None]
        chosen[crowded] = below | (tied & (np.cumsum(tied, axis=1) <= room))
    columns = np.nonzero(chosen)[1].reshape(len(keys), n)  # ascending within each row
    by_key = np.argsort(np.take_along_axis(keys, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, by_key, axis=1)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class): int64 ``[C, C]``, rows are true classes.

    ``C * C`` cells: for a few classes only (the summary route sends it up to
    ``DENSE_CONFUSION_CLASSES``); :func:`confusion_cells` holds the same counts in
    memory proportional to the images, whatever ``C``.

    Raises:
        ValueError: lengths differ, or a label or prediction is outside ``[0, C)``.
    """
    labels, predictions = _class_pairs(labels, predictions, num_classes)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


# Up to this many classes the summary route sends the confusion matrix as a dense
# ``[C][C]`` list (the tab draws it up to 60); beyond, only its cells with images.
DENSE_CONFUSION_CLASSES = 100


def confusion_cells(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """The cells of the confusion matrix that hold images, sparsely: int64 ``[K, 3]`` rows
    ``(true class, predicted class, count)``, most images first, ties to the lower true
    class, then the lower predicted class. ``K <= N``: memory and time grow with the
    images (``O(N log N)``), never with ``C * C``; :func:`confusion_matrix` has the same
    counts at ``[true, predicted]``.

    >>> confusion_cells(np.array([0, 1, 1, 2, 2]), np.array([0, 2, 2, 1, 2]), 3).tolist()
    [[1, 2, 2], [0, 0, 1], [2, 1, 1], [2, 2, 1]]

    Raises:
        ValueError: lengths differ, or a label or prediction is outside ``[0, C)``.
    """
    labels, predictions = _class_pairs(labels, predictions, num_classes)
    keys, counts = np.unique(labels * num_classes + predictions, return_counts=True)
    order = np.lexsort((keys, -counts))  # most images first; ties: (true, predicted) ascending
    keys, counts = keys[order], counts[order]
    return np.stack([keys // num_classes, keys % num_classes, counts], axis=1).astype(np.int64)


def _class_pairs(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` and ``predictions`` checked (:func:`check_classes`) and of one length,
    without the images that have no prediction (:data:`NO_PREDICTION`)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape == predictions.shape and predictions.size:
        predicted = predictions != NO_PREDICTION
        if not predicted.all():
            labels, predictions = labels[predicted], predictions[predicted]
    labels = check_classes(labels, num_classes, "labels")
    predictions = check_classes(predictions, num_classes, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must have the same length, got {len(labels)} "
            f"and {len(predictions)}"
        )
    return labels, predictions


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """The fraction of images predicted as their label, among those with a prediction
    (:data:`NO_PREDICTION`: classifier outputs not finite); NaN for none.

    >>> accuracy(np.array([0, 1, 1]), np.array([0, 0, NO_PREDICTION]))
    0.5
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    predicted = predictions != NO_PREDICTION
    if not predicted.any():
        return float("nan")
    return float(np.mean(labels[predicted] == predictions[predicted]))


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


# The per-neuron scores of an OOD set, as :meth:`OODScores.per_neuron` names them; the
# headline means of ``summary()`` are ``<name>_mean``.
NEURON_SCORES = ("novelty", "novelty_raw", "spurious", "activation_ratio")


def dead_neurons(ind_max: np.ndarray) -> np.ndarray:
    """bool ``[M]``: the neurons never above 0 on the InD set (or whose maximum is not
    finite). They have no normalized activation, no novelty and are left out of every
    mean and fraction."""
    return np.isnan(alive_divisor(ind_max))


def fires(maximum: float) -> bool | None:
    """Whether a neuron whose highest activation on a set is ``maximum`` fires on it
    (``maximum > 0``); None when unknown (NaN: it saw NaN). On the InD set, a neuron
    that does not fire is dead (:func:`dead_neurons`).

    >>> fires(0.5), fires(0.0), fires(float("nan"))
    (True, False, None)
    """
    maximum = float(maximum)
    return None if np.isnan(maximum) else maximum > 0


def histogram_edges(value_range: np.ndarray, bins: int) -> np.ndarray:
    """float64 ``[..., bins + 1]``: the bin edges of the activation histograms over
    ``value_range`` (``[..., 2]``, low and high: a layer's stored ``histogram_range``),
    as ``np.histogram(values, bins, range=(low, high))`` draws them. Bin ``i`` holds
    ``edges[i] <= x < edges[i + 1]``, the last one also ``x == high``.

    >>> histogram_edges(np.array([0.0, 2.0]), 4).tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    value_range = np.asarray(value_range, dtype=np.float64)
    return np.linspace(value_range[..., 0], value_range[..., 1], bins + 1, axis=-1)


def interval_edges(maximum: np.ndarray, bands: int) -> np.ndarray:
    """float64 ``[..., bands + 1]``: the edges of the activation bands of the interval
    examples, ``maximum * j / bands`` for ``j = 0..bands`` from a dataset's stored
    ``maxima``; band ``j`` (lowest first) holds ``edges[j] < x <= edges[j + 1]``. NaN
    where the maximum is not a positive finite number: no bands.

    >>> interval_edges(np.array([5.0, 0.0]), 5)[0].tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """
    maximum = np.asarray(maximum, dtype=np.float64)
    alive = np.isfinite(maximum) & (maximum > 0)
    scale = np.where(alive, maximum, np.nan)[..., None]
    return scale * np.arange(bands + 1) / bands


@dataclasses.dataclass(frozen=True)
class OODScores:
    """Per-neuron scores of one OOD set (float32 ``[M]`` each), from what a log stores.

    ``novelty_raw`` is max over categories of the InD means minus that of the OOD
    means, on raw activations (stored as kind ``novelty``); ``novelty`` is the same
    difference on activations divided by the neuron's InD maximum, the Deephys
    authors' units (mjgroth/deephys-aio, Colored_MNIST_Tutorial.ipynb), comparable
    across neurons, layers and models. Scaling a neuron by a positive number scales
    every category mean, so ``novelty = novelty_raw / ind_max`` exactly. ``spurious``
    is NaN where undefined; dead neurons (:func:`dead_neurons`) have no novelty and
    no activation ratio and are left out of :meth:`summary` (see docs/concepts.md).
    """

    novelty_raw: np.ndarray
    spurious: np.ndarray
    activation_ratio: np.ndarray
    ind_max: np.ndarray

    @property
    def novelty(self) -> np.ndarray:
        """Novelty in the authors' units (raw novelty / InD maximum); NaN if dead."""
        return normalize(self.novelty_raw, self.ind_max)

    @property
    def dead(self) -> np.ndarray:
        """bool ``[M]``: neurons never above 0 on InD."""
        return dead_neurons(self.ind_max)

    def per_neuron(self) -> dict[str, np.ndarray]:
        """Every per-neuron score by name (:data:`NEURON_SCORES`)."""
        return {name: np.asarray(getattr(self, name)) for name in NEURON_SCORES}

    def summary(self) -> dict[str, float]:
        """The headline numbers, logged as scalars ``deephys/<layer>/<ood>/<name>`` and
        shown in the tab and the ``scores`` table.

        Means and fractions are over the live neurons with a defined score;
        ``spurious_undefined`` counts the live neurons without one and
        ``dead_neurons`` the neurons left out. NaN where no neuron has a value.
        """
        alive = ~self.dead
        novelty = self.novelty[alive]
        defined = novelty[np.isfinite(novelty)]
        positive = float(np.mean(defined > 0)) if defined.size else float("nan")
        spurious = np.asarray(self.spurious)[alive]
        return {
            "novelty_mean": finite_mean(novelty),
            "novelty_positive_fraction": positive,
            "novelty_raw_mean": finite_mean(np.asarray(self.novelty_raw)[alive]),
            "spurious_mean": finite_mean(spurious),
            "spurious_undefined": int(np.sum(~np.isfinite(spurious))),
            "activation_ratio_mean": finite_mean(np.asarray(self.activation_ratio)[alive]),
            "dead_neurons": int(np.sum(~alive)),
        }

    def densities(self, bins: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """The distributions the tab plots (the paper's Fig. 3), as :func:`density` gives
        them, over the live neurons: of the positive novelty values (the paper's
        novelty score) and of the defined spurious scores, both over [0, 1] (values
        above 1 are counted in the last bin)."""
        alive = ~self.dead
        novelty = self.novelty[alive]
        return {  # density() keeps the finite values
            "novelty": density(np.minimum(novelty[novelty > 0], 1.0), (0.0, 1.0), bins=bins),
            "spurious": density(np.asarray(self.spurious)[alive], (0.0, 1.0), bins=bins),
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
