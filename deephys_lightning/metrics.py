"""Deephys metrics: pure, vectorised functions on activation matrices.

Arrays in, arrays out: NumPy arrays or torch tensors in, NumPy arrays out (torch's
CPU kernels do the heavy lifting). No Lightning or TensorBoard import, so these
work on any activations. This module holds the kernels over whole activation
matrices that the writer runs; the small derived numbers that readers need too
(normalization, the ranking rule, confusion matrix, score summary) have their one
implementation in ``tensorboard_plugin_deephys.log.derived``, which needs NumPy only.
The definitions are those of the Deephys paper, made exact in ``docs/concepts.md``.

Example::

    >>> import numpy as np
    >>> ind = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])    # 3 InD images, 2 neurons
    >>> ood = np.array([[1.5, 1.0], [0.5, 1.0]])                # 2 OOD images
    >>> activation_ratio(ind, ood).tolist()
    [0.5, 0.25]
    >>> ind_means = category_means(ind, np.array([0, 1, 1]), num_classes=2)
    >>> ood_means = category_means(ood, np.array([1, 0]), num_classes=2)
    >>> raw_novelty(ind_means, ood_means).tolist()
    [1.0, 2.0]
    >>> novelty(ind_means, ood_means, max_per_neuron(ind)).tolist()   # the authors' units
    [0.3333333432674408, 0.5]
    >>> spurious(ind_means, ood_means).tolist()    # neuron 1 is constant on OOD
    [0.0, nan]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.derived import OODScores

__all__ = [
    "DatasetStatistics",
    "NeuronDistributions",
    "OODScores",
    "activation_ratio",
    "as_float16",
    "as_numpy",
    "bottom_k",
    "category_means",
    "confusion_matrix",
    "confusion_sets_top_neurons",
    "confusion_top_neurons",
    "dataset_statistics",
    "device_of",
    "histogram_range",
    "max_per_neuron",
    "mean_activation",
    "neuron_distributions",
    "normalized_activations",
    "novelty",
    "ood_scores",
    "ratio_of_maxima",
    "raw_novelty",
    "rows_at",
    "spread_subset",
    "spurious",
    "top_columns",
    "top_k",
    "top_neurons",
]

# float16 input is widened to float32 in blocks of this many rows or columns, never
# as a whole (50,000 x 2,048 is 400 MB in float32).
_ROW_BLOCK = 2048
_COLUMN_BLOCK = 64
# Rows at most twice this beyond k are ranked by one stable sort (faster than a
# selection there).
_SORT_MARGIN = 32


def as_numpy(array: Any) -> np.ndarray:
    """A NumPy view of ``array`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _as_torch(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor sharing memory with ``array`` where it can (torch's half-precision
    kernels are much faster than NumPy's): a tensor stays on its device, float64 and
    other types become float32."""
    if isinstance(array, torch.Tensor):
        array = array.detach()
        if array.dtype == torch.float64 or array.is_complex():
            array = array.float()
        return array
    if array.dtype.kind not in "fiub" or array.dtype == np.float64:
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array))


def _matrix(array: Any, name: str) -> np.ndarray:
    out = as_numpy(array)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D [images, neurons], got shape {out.shape}")
    return out


def _rows(array: Any, name: str) -> torch.Tensor:
    """A 2-D ``[images, neurons]`` tensor of ``array``: a torch tensor stays on its
    device (the kernels that take it compute there; only their results, which are
    small, cross to the host), anything else is a CPU tensor sharing its memory."""
    rows = _as_torch(array if isinstance(array, torch.Tensor) else as_numpy(array))
    if rows.ndim != 2:
        raise ValueError(f"{name} must be 2-D [images, neurons], got shape {tuple(rows.shape)}")
    return rows


def as_float16(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as the log stores it, float16, on its device; float64 is rounded once,
    as NumPy rounds it (torch rounds it to float32 first), on the host.

    Example::

        >>> just_above_a_midpoint = 1.00048828125 + 2**-30
        >>> as_float16(torch.tensor([just_above_a_midpoint], dtype=torch.float64)).item()
        1.0009765625
    """
    if tensor.dtype == torch.float64:
        with np.errstate(over="ignore"):  # overflow is inf, as in the log
            rounded = tensor.detach().cpu().numpy().astype(np.float16)
        return torch.from_numpy(rounded).to(tensor.device)
    return tensor.detach().to(torch.float16)


def _host(tensor: torch.Tensor) -> np.ndarray:
    """A small result on the host, as NumPy."""
    return tensor.cpu().numpy()


# -- rows: where they are, which of them ---------------------------------------------


def device_of(array: np.ndarray | torch.Tensor) -> torch.device:
    """Where the work on ``array`` happens: a tensor's device (a GPU's, for the record's
    rows kept there), else the CPU.

    Example::

        >>> device_of(np.zeros(2)), device_of(torch.zeros(2))
        (device(type='cpu'), device(type='cpu'))
    """
    return array.device if isinstance(array, torch.Tensor) else torch.device("cpu")


def rows_at(array: np.ndarray | torch.Tensor, rows: np.ndarray) -> np.ndarray | torch.Tensor:
    """The ``rows`` of ``array``: of a tensor on its device (the index is copied there).

    Example::

        >>> rows_at(torch.arange(5), np.array([4, 0])).tolist()
        [4, 0]
    """
    if isinstance(array, torch.Tensor):
        return array[torch.from_numpy(np.asarray(rows)).to(array.device)]
    return np.asarray(array)[rows]


def spread_subset(count: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``count`` items, evenly spread, deterministic
    (the same every epoch): every rule here that keeps a part of a set keeps these.

    Example::

        >>> spread_subset(10, 4).tolist()
        [0, 3, 6, 9]
    """
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def _labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    out = as_numpy(labels)
    if out.ndim != 1 or out.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {out.shape}")
    return derived.check_classes(out, num_classes, name)


def category_means(activations: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Mean activation of every neuron over the images of each category.

    Args:
        activations: [N, M] activations.
        labels: [N] integer categories in ``[0, num_classes)``.
        num_classes: C.

    Returns:
        float32 [C, M]; the row of a category without images is NaN.
    """
    return dataset_statistics(activations, labels, num_classes)[0]


class DatasetStatistics(NamedTuple):
    """What one pass over a dataset's rows finds (:func:`dataset_statistics`).

    ``means`` float32 ``[C, M]`` the category means (NaN: a category without images);
    ``maxima`` and ``minima`` float32 ``[M]`` each neuron's highest and lowest
    activation (NaN where it has a NaN; NaN without images).
    """

    means: np.ndarray
    maxima: np.ndarray
    minima: np.ndarray


def dataset_statistics(activations: Any, labels: Any, num_classes: int) -> DatasetStatistics:
    """Category means ``[C, M]`` and per-neuron maxima and minima ``[M]`` in one pass
    over the rows.

    The same values as :func:`category_means` and :func:`max_per_neuron`, for a
    dataset that is read once (float16 rows are widened block by block); the minima
    let :func:`histogram_range` skip its own pass.

    Example::

        >>> means, maxima, minima = dataset_statistics(
        ...     np.array([[1.0, -2.0], [3.0, 0.0]]), np.array([0, 0]), num_classes=1)
        >>> means.tolist(), maxima.tolist(), minima.tolist()
        ([[2.0, -1.0]], [3.0, 0.0], [1.0, -2.0])
    """
    rows = _rows(activations, "activations")
    n, m = rows.shape
    labels = _labels(labels, n, num_classes)
    device = rows.device
    index = torch.from_numpy(labels).to(device)
    sums = torch.zeros((num_classes, m), dtype=torch.float64, device=device)
    block_sums = torch.empty((num_classes, m), dtype=torch.float64, device=device)
    wide = _WideBlock(rows)
    maxima = torch.full((m,), float("nan") if n == 0 else -float("inf"), device=device)
    minima = -maxima
    for start in range(0, n, _ROW_BLOCK):
        block = rows[start : start + _ROW_BLOCK]
        # Each block summed in float64, exactly for float16 values (_ROW_BLOCK rows of
        # them span at most 51 bits), so in any order (a GPU's atomic adds too); the
        # blocks added in order.
        block_sums.zero_().index_add_(0, index[start : start + _ROW_BLOCK], wide.of(block))
        sums += block_sums
        maxima = torch.maximum(maxima, block.amax(dim=0).float())  # NaN propagates
        minima = torch.minimum(minima, block.amin(dim=0).float())
    counts = torch.from_numpy(np.bincount(labels, minlength=num_classes)).to(device, torch.float64)
    means = sums / counts[:, None]
    means[counts == 0] = float("nan")
    return DatasetStatistics(_host(means.float()), _host(maxima), _host(minima))


class _WideBlock:
    """float64 copies of blocks of ``rows`` (at most ``_ROW_BLOCK`` of them), made in one
    buffer: a new 32 MiB tensor a block would cost more in page faults than the copy."""

    def __init__(self, rows: torch.Tensor) -> None:
        shape = (min(_ROW_BLOCK, len(rows)), *rows.shape[1:])
        self._buffer = torch.empty(shape, dtype=torch.float64, device=rows.device)

    def of(self, block: torch.Tensor) -> torch.Tensor:
        return self._buffer[: len(block)].copy_(block)


# A kind of confusion sets: (pairs [P, 2], neurons [P, n], means [P, n]).
ConfusionSets = tuple[np.ndarray, np.ndarray, np.ndarray]


def confusion_top_neurons(
    activations: Any,
    labels: Any,
    predictions: Any,
    num_classes: int,
    n: int,
    ind_max: Any | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every (true, predicted) pair that occurs, its ``n`` most active neurons.

    The directed sets of :func:`confusion_sets_top_neurons`: ``(pairs [P, 2],
    neurons [P, n], means [P, n])``, pairs sorted by (true, predicted).
    """
    directed, _ = confusion_sets_top_neurons(
        activations, labels, predictions, num_classes, n, ind_max
    )
    return directed


def confusion_sets_top_neurons(
    activations: Any,
    labels: Any,
    predictions: Any,
    num_classes: int,
    n: int,
    ind_max: Any | None = None,
    image_top: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[ConfusionSets, ConfusionSets]:
    """The ``n`` most active neurons of every confusion set that has images, in one pass.

    Two kinds of sets: *directed*, the images of label ``a`` predicted as ``b`` (``a == b``
    are the correctly classified images of ``a``), and *either*, the paper's confusion
    between ``a < b`` (section 2.4): images of ``a`` predicted as ``b`` or of ``b``
    predicted as ``a``. A set's activation is the mean over its images, divided by the
    neuron's InD maximum when ``ind_max`` ([M]) is given (dead neurons: NaN). Neurons are
    ranked by it, highest first, ties to the lower neuron, NaN last.

    ``image_top``, each image's ``(neurons [N, n], normalized [N, n])`` from
    :func:`top_neurons` on the same activations and ``ind_max``, saves most of the
    work where many sets hold one image (a wrong prediction seldom made twice): such a
    set's mean is its image's normalized activation, so its top neurons are the
    image's, the same numbers; only the other sets are summed.

    Returns:
        ``((pairs [P, 2], neurons [P, n], means [P, n]), (pairs [S, 2], neurons [S, n],
        means [S, n]))``, pairs sorted by their first, then second class.
    """
    rows = _rows(activations, "activations")
    count, m = rows.shape
    labels = _labels(labels, count, num_classes)
    predictions = _labels(predictions, count, num_classes, "predictions")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(n, m)
    device = rows.device
    divisor = (
        torch.ones(m, device=device)
        if ind_max is None
        else torch.from_numpy(derived.alive_divisor(as_numpy(ind_max).astype(np.float32))).to(
            device
        )
    )
    pair_ids, groups = np.unique(labels * num_classes + predictions, return_inverse=True)
    pairs = np.stack([pair_ids // num_classes, pair_ids % num_classes], axis=1)
    sizes = np.bincount(groups, minlength=len(pair_ids))
    # The unordered pair of each off-diagonal directed pair. Where only one direction
    # occurs, the set in either direction is the directed set: its top neurons are
    # copied; only pairs confused both ways are summed (each direction's sums added).
    off = np.flatnonzero(pairs[:, 0] != pairs[:, 1])
    low, high = pairs[off].min(axis=1), pairs[off].max(axis=1)
    either_ids, either_of = np.unique(low * num_classes + high, return_inverse=True)
    either_pairs = np.stack([either_ids // num_classes, either_ids % num_classes], axis=1)
    two_way = np.bincount(either_of, minlength=len(either_ids)) == 2
    both_rank = np.cumsum(two_way) - 1  # compact index of each two-way pair
    summed = two_way[either_of]  # directed rows that take part in a two-way sum
    both_sizes = np.bincount(
        both_rank[either_of[summed]], weights=sizes[off[summed]], minlength=int(two_way.sum())
    )
    # The sets of one image that take no part in a two-way sum are copied from their
    # image's top neurons (with image_top); the others are summed, in compact order.
    copied = np.zeros(len(pair_ids), dtype=bool)
    if image_top is not None:
        _check_image_top(image_top, count, n, ind_max)
        copied = sizes == 1
        copied[off[summed]] = False
    kept = np.flatnonzero(~copied)
    compact = np.cumsum(~copied) - 1  # each kept set's row in the sums
    summed_images = None if not copied.any() else np.flatnonzero(~copied[groups])
    image_groups = groups if summed_images is None else groups[summed_images]
    summed_rows = torch.from_numpy(compact[off[summed]]).to(device)
    into_both = torch.from_numpy(both_rank[either_of[summed]].astype(np.int64)).to(device)
    index = torch.from_numpy(compact[image_groups].astype(np.int64)).to(device)
    image_rows = None if summed_images is None else torch.from_numpy(summed_images).to(device)
    directed = _RunningTop(len(kept), n, torch.from_numpy(sizes[kept]).float()[:, None], device)
    both = _RunningTop(int(two_way.sum()), n, torch.from_numpy(both_sizes).float()[:, None], device)
    for start in range(0, m, _COLUMN_BLOCK * 4):
        columns = rows[:, start : start + _COLUMN_BLOCK * 4]
        if image_rows is not None:
            columns = columns[image_rows]
        # Summed like dataset_statistics: exact float64 sums of each block of rows (the
        # same in any order), the blocks added in order, then rounded to float32.
        wide_sums = torch.zeros((len(kept), columns.shape[1]), dtype=torch.float64, device=device)
        block_sums = torch.empty_like(wide_sums)
        wide = _WideBlock(columns)
        for row in range(0, len(columns), _ROW_BLOCK):
            block = wide.of(columns[row : row + _ROW_BLOCK])
            wide_sums += block_sums.zero_().index_add_(0, index[row : row + _ROW_BLOCK], block)
        sums = wide_sums.float()
        scale = divisor[start : start + columns.shape[1]]
        both_sums = torch.zeros(
            (both.neurons.shape[0], columns.shape[1]), dtype=torch.float32, device=device
        )
        both_sums.index_add_(0, into_both, sums[summed_rows])  # two terms: any order
        directed.add(start, sums / scale)
        both.add(start, both_sums / scale)
    pair_neurons = np.empty((len(pair_ids), n), dtype=np.int64)
    pair_means = np.empty((len(pair_ids), n), dtype=np.float32)
    pair_neurons[kept], pair_means[kept] = directed.result()
    if copied.any():
        assert image_top is not None
        image_of = np.empty(len(pair_ids), dtype=np.int64)
        image_of[groups] = np.arange(count)  # a set's image (its only one where copied)
        pair_neurons[copied] = image_top[0][image_of[copied]]
        # + 0.0: a zero is +0.0, as a sum of one image's -0.0 is
        pair_means[copied] = image_top[1][image_of[copied]] + np.float32(0.0)
    # Each unordered pair's result: its one directed set, or the two-way sum.
    one_way_row = np.zeros(len(either_ids), dtype=np.int64)
    one_way_row[either_of[~summed]] = off[~summed]
    either_neurons, either_means = pair_neurons[one_way_row], pair_means[one_way_row]
    if two_way.any():
        either_neurons[two_way], either_means[two_way] = both.result()
    return (pairs.astype(np.int64), pair_neurons, pair_means), (
        either_pairs.astype(np.int64),
        either_neurons,
        either_means,
    )


def _check_image_top(
    image_top: tuple[np.ndarray, np.ndarray], count: int, n: int, ind_max: Any | None
) -> None:
    if ind_max is None:
        raise ValueError("image_top are normalized by ind_max: pass it too")
    neurons, values = image_top
    if neurons.shape != (count, n) or values.shape != (count, n):
        raise ValueError(
            f"image_top must be two [{count}, {n}] arrays (top_neurons of the same "
            f"activations), got {list(neurons.shape)} and {list(values.shape)}"
        )


class _RunningTop:
    """The ``n`` highest mean columns of each of ``groups`` rows, over column blocks."""

    def __init__(self, groups: int, n: int, sizes: torch.Tensor, device: torch.device) -> None:
        self.n = n
        self.sizes = sizes.to(device)
        self.neurons = torch.empty((groups, 0), dtype=torch.int64, device=device)
        self.means = torch.empty((groups, 0), dtype=torch.float32, device=device)

    def add(self, start: int, sums: torch.Tensor) -> None:
        groups, width = sums.shape
        # Candidates in ascending neuron order, so that ties go to the lower neuron.
        kept = torch.sort(self.neurons, dim=1)
        block_neurons = torch.arange(start, start + width, device=sums.device)
        candidates = torch.cat([kept.values, block_neurons.expand(groups, -1)], dim=1)
        means = torch.cat([torch.gather(self.means, 1, kept.indices), sums / self.sizes], dim=1)
        order = top_columns(means, min(self.n, means.shape[1]))
        self.neurons = torch.gather(candidates, 1, order)
        self.means = torch.gather(means, 1, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return _host(self.neurons), _host(self.means)


def mean_activation(activations: Any, selection: Any) -> np.ndarray:
    """Mean activation of every neuron over a set of images.

    Args:
        activations: [N, M].
        selection: a boolean mask [N] or integer image indices, e.g. one category
            (``labels == c``) or a confusion set (``(labels == a) & (preds == b)``).

    Returns:
        float32 [M]; NaN for an empty set.
    """
    acts = _matrix(activations, "activations")
    selection = as_numpy(selection)
    if selection.dtype == bool:
        if selection.shape != (acts.shape[0],):
            raise ValueError(
                f"a boolean selection must have shape ({acts.shape[0]},), got {selection.shape}"
            )
        rows = acts[selection]
    else:
        rows = acts[selection.astype(np.int64)]
    if rows.shape[0] == 0:
        return np.full(acts.shape[1], np.nan, dtype=np.float32)
    return rows.astype(np.float32).mean(axis=0, dtype=np.float64).astype(np.float32)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class): int64 [C, C], rows are true classes.

    Torch tensors are accepted; see :func:`tensorboard_plugin_deephys.log.derived.confusion_matrix`.
    """
    return derived.confusion_matrix(as_numpy(labels), as_numpy(predictions), num_classes)


def max_per_neuron(activations: Any) -> np.ndarray:
    """Highest activation of every neuron over the images: float32 [M] (NaN when N = 0)."""
    rows = _rows(activations, "activations")
    if rows.shape[0] == 0:
        return np.full(rows.shape[1], np.nan, dtype=np.float32)
    return _host(rows.amax(dim=0).float())


def normalized_activations(activations: Any, ind_max: Any) -> np.ndarray:
    """Activations divided by the InD maximum of their neuron: float32 [N, M].

    Images of any dataset, OOD included, are normalised by the InD maximum. Neurons
    whose InD maximum is not a positive finite number (dead on InD) give NaN.
    """
    acts = _matrix(activations, "activations")
    ind_max = as_numpy(ind_max).astype(np.float32)
    if ind_max.shape != (acts.shape[1],):
        raise ValueError(f"ind_max must have shape ({acts.shape[1]},), got {ind_max.shape}")
    return derived.normalize(acts, ind_max)


def activation_ratio(ind_activations: Any, ood_activations: Any) -> np.ndarray:
    """Per neuron, the highest OOD activation over the highest InD activation.

    Args:
        ind_activations: [N, M] InD activations.
        ood_activations: [K, M] activations of one OOD set.

    Returns:
        float32 [M]; can exceed 1; NaN for a neuron dead on InD (max <= 0).
    """
    ind = _matrix(ind_activations, "ind_activations")
    ood = _matrix(ood_activations, "ood_activations")
    if ind.shape[1] != ood.shape[1]:
        raise ValueError(
            f"InD and OOD activations need the same neurons, got {ind.shape[1]} and {ood.shape[1]}"
        )
    return ratio_of_maxima(max_per_neuron(ind), max_per_neuron(ood))


def ratio_of_maxima(ind_max: Any, ood_max: Any) -> np.ndarray:
    """``ood_max / ind_max`` with NaN where ``ind_max`` is not positive and finite: float32 [M]."""
    return derived.normalize(as_numpy(ood_max), as_numpy(ind_max))


def _check_means(ind_means: Any, ood_means: Any) -> tuple[np.ndarray, np.ndarray]:
    ind = _matrix(ind_means, "ind_means")
    ood = _matrix(ood_means, "ood_means")
    if ind.shape != ood.shape:
        raise ValueError(
            f"category means must have the same shape [C, M], got {ind.shape} and {ood.shape}"
        )
    # float32 holds category means exactly enough and ranks them twice as fast;
    # float64 input stays float64 so that no two different values become ties.
    dtype = np.float64 if np.float64 in (ind.dtype, ood.dtype) else np.float32
    return ind.astype(dtype, copy=False), ood.astype(dtype, copy=False)


def _max_ignoring_nan(means: np.ndarray) -> np.ndarray:
    # fmax skips NaN (an empty category); a column of only NaN stays NaN.
    if means.shape[0] == 0:
        return np.full(means.shape[1], np.nan)
    return np.fmax.reduce(means, axis=0)


def raw_novelty(ind_means: Any, ood_means: Any) -> np.ndarray:
    """Raw novelty per neuron: max over categories of InD minus that of OOD, on the raw
    category means (so in the neuron's own units).

    Categories without images (NaN rows) are skipped. Positive values mean the
    neuron's strongest category response drops on the OOD set: its feature is
    missing there.

    Returns:
        float32 [M]; NaN where a side has no category with data.
    """
    ind, ood = _check_means(ind_means, ood_means)
    return (_max_ignoring_nan(ind) - _max_ignoring_nan(ood)).astype(np.float32)


def novelty(ind_means: Any, ood_means: Any, ind_max: Any) -> np.ndarray:
    """Novelty per neuron in the Deephys authors' units: :func:`raw_novelty` on
    activations divided by each neuron's InD maximum ``ind_max`` ([M]) before the
    category means are taken (mjgroth/deephys-aio, Colored_MNIST_Tutorial.ipynb).

    Dividing a neuron by a positive number divides its category means, so this is
    ``raw_novelty / ind_max``: comparable across neurons, layers and models, at most
    1 after ReLU. The paper's novelty score is its positive part.

    Returns:
        float32 [M]; NaN for neurons dead on InD and where a side has no data.
    """
    return derived.normalize(raw_novelty(ind_means, ood_means), as_numpy(ind_max))


def spurious(ind_means: Any, ood_means: Any) -> np.ndarray:
    """Spurious score per neuron: ``1 - |Spearman correlation|`` of category means.

    Categories that are NaN on either side are left out for that neuron; ties get
    average ranks. Where fewer than two categories remain, or either side is
    constant over them, the correlation is undefined and the score is NaN (never 0).

    Returns:
        float32 [M] in [0, 1], or NaN.
    """
    ind, ood = _check_means(ind_means, ood_means)
    # One row per neuron: sorting along contiguous rows is several times faster.
    ind_rows, ood_rows = np.ascontiguousarray(ind.T), np.ascontiguousarray(ood.T)
    valid = np.isfinite(ind_rows) & np.isfinite(ood_rows)
    if not valid.all():
        # Invalid entries become +inf on both sides: they rank above every valid value,
        # so the valid values keep exactly the ranks they have among themselves.
        ind_rows = np.where(valid, ind_rows, np.inf)
        ood_rows = np.where(valid, ood_rows, np.inf)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev_ind = _centred(_average_ranks(ind_rows), valid, count)
        dev_ood = _centred(_average_ranks(ood_rows), valid, count)
        cov = np.einsum("ij,ij->i", dev_ind, dev_ood)
        var_ind = np.einsum("ij,ij->i", dev_ind, dev_ind)
        var_ood = np.einsum("ij,ij->i", dev_ood, dev_ood)
        rho = cov / np.sqrt(var_ind * var_ood)
    # Ranks are multiples of 1/2, so "constant" is an exact zero variance.
    undefined = (count < 2) | (var_ind == 0) | (var_ood == 0)
    score = 1.0 - np.minimum(np.abs(rho), 1.0)
    return np.where(undefined, np.nan, score).astype(np.float32)


def _centred(ranks: np.ndarray, valid: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Ranks minus their mean over the valid entries; invalid entries become 0."""
    if valid.all():
        # Ranks 1..c, ties averaged, always sum to c(c+1)/2: the mean is (c+1)/2.
        ranks -= (ranks.shape[1] + 1) / 2
        return ranks
    weight = valid.astype(np.float64)
    mean = np.einsum("ij,ij->i", ranks, weight) / count
    return (ranks - mean[:, None]) * weight


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1-based) along each row, ties sharing their average rank, as float64;
    blocks of rows on as many threads as torch uses (NumPy's sorts release the GIL)."""
    m, c = values.shape
    ranks = np.empty((m, c), dtype=np.float64)
    if c == 0:
        return ranks

    def run(start: int) -> None:
        rows = slice(start, start + _RANK_ROWS)
        ranks[rows] = _average_ranks_of(values[rows])

    _on_threads(run, range(0, m, _RANK_ROWS), torch.get_num_threads())
    return ranks


# Rows ranked at a time by one thread.
_RANK_ROWS = 256


def _average_ranks_of(values: np.ndarray) -> np.ndarray:
    """:func:`_average_ranks` of a block of rows, on the calling thread."""
    m, c = values.shape
    # NumPy's SIMD quicksort; the order among ties does not matter, they share a rank.
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    position = np.broadcast_to(np.arange(c, dtype=np.int32), (m, c))
    new_group = np.ones((m, c), dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last_of_group = np.ones((m, c), dtype=bool)
    last_of_group[:, :-1] = new_group[:, 1:]
    # First and last sorted position of each element's tie group.
    first = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    # (accumulate runs on a contiguous reversed copy: a reversed view is much slower)
    reverse = np.ascontiguousarray(np.where(last_of_group, position, c)[:, ::-1])
    last = np.minimum.accumulate(reverse, axis=1)[:, ::-1]
    ranks = np.empty((m, c), dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    return ranks


def _on_threads(work: Callable[[int], None], starts: Sequence[int], threads: int) -> None:
    """``work(start)`` for each of ``starts``, on up to ``threads`` threads; each writes
    its own part of the results, so the threads change no result. Raises the first
    error of any of them."""
    threads = max(1, min(threads, len(starts)))
    if threads == 1:
        for start in starts:
            work(start)
        return
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(work, start) for start in starts]:
            done.result()


def top_k(activations: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the ``k`` images with the highest activation.

    Args:
        activations: [N, M] activations (N images, M neurons).
        k: how many images per neuron; fewer when N < k.

    Returns:
        ``(indices [M, k], values [M, k])``, highest first; ties go to the lower
        image index; NaN ranks last. Values are float32.
    """
    rows = _rows(activations, "activations")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, m = rows.shape
    k = min(k, n)
    indices = torch.empty((m, k), dtype=torch.int64, device=rows.device)
    values = torch.empty((m, k), dtype=torch.float32, device=rows.device)
    for start in range(0, m, _COLUMN_BLOCK):
        # One row per neuron: torch's selection kernels are fastest along rows.
        block = rows[:, start : start + _COLUMN_BLOCK].T.contiguous().float()  # [B, N]
        order = top_columns(block, k)
        indices[start : start + block.shape[0]] = order
        values[start : start + block.shape[0]] = torch.gather(block, 1, order)
    return _host(indices), _host(values)


def top_columns(block: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` column indices of the ``k`` largest values of each row of ``block``, in
    order: highest first, ties to the lower column (-0.0 ties with +0.0), NaN last.
    Tensor in, tensor out, on the block's device (the rule every top list here uses).

    Example::

        >>> top_columns(torch.tensor([[1.0, 3.0, float("nan"), 3.0]]), 3).tolist()
        [[1, 3, 0]]
    """
    if k == 0:
        return torch.empty((block.shape[0], 0), dtype=torch.int64, device=block.device)
    key = block
    # A NaN makes the sum NaN (so does inf beside -inf: then the mask finds none).
    if bool(torch.isnan(block.sum())):
        nan = torch.isnan(block)
        if torch.isneginf(block).any():
            # A float64 key orders every float32 value and puts NaN below even -inf.
            key = block.double()
            key = torch.where(torch.isneginf(key), -torch.finfo(torch.float64).max, key)
        key = torch.where(nan, -torch.inf, key)  # without -inf values, NaN alone is -inf
    n = key.shape[1]
    # (+ 0.0 makes -0.0 a +0.0: equal values must tie in every device's sort)
    if n <= 2 * (k + _SORT_MARGIN):  # a row hardly longer than k: one stable sort is exact
        return torch.sort(key + 0.0, dim=1, descending=True, stable=True).indices[:, :k]
    # One candidate beyond k: where it is below the k-th key, the first k candidates
    # are the k largest (in some order), and sorting them is exact.
    top_keys, candidates = torch.topk(key, k + 1, dim=1)
    columns = candidates[:, :k].sort(dim=1).values
    tied_rows = torch.nonzero(top_keys[:, k] == top_keys[:, k - 1])[:, 0]
    if len(tied_rows):
        # Rows with ties across the k-th key: keep the lowest columns among those tied
        # with it that complete k.
        tied_keys = key[tied_rows]
        kth = top_keys[tied_rows, k - 1 : k]
        above = tied_keys > kth
        tied = tied_keys == kth
        room = k - torch.count_nonzero(above, dim=1).unsqueeze(1)
        running = tied.to(torch.int32).cumsum(dim=1, dtype=torch.int32)
        chosen = above | (tied & (running <= room))
        # Exactly k per row; nonzero() lists them row by row, columns ascending.
        columns[tied_rows] = chosen.nonzero()[:, 1].reshape(len(tied_rows), k)
    keys = torch.gather(key, 1, columns) + 0.0
    # A stable sort keeps the lower column first among equal keys.
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(columns, 1, order)


def top_neurons(activations: Any, ind_max: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the ``n`` neurons with the highest normalized activation.

    Args:
        activations: [N, M] activations of any dataset.
        ind_max: [M] the InD maximum of each neuron (see :func:`max_per_neuron`).
        n: how many neurons per image; fewer when M < n.

    Returns:
        ``(neurons [N, n], normalized [N, n])``, highest first, ties to the lower
        neuron; neurons dead on InD (NaN normalized activation) rank last.
    """
    rows = _rows(activations, "activations")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count, m = rows.shape
    n = min(n, m)
    ind_max = as_numpy(ind_max).astype(np.float32)
    if ind_max.shape != (m,):
        raise ValueError(f"ind_max must have shape ({m},), got {ind_max.shape}")
    denominator = torch.from_numpy(derived.alive_divisor(ind_max)).to(rows.device)
    neurons = torch.empty((count, n), dtype=torch.int64, device=rows.device)
    values = torch.empty((count, n), dtype=torch.float32, device=rows.device)
    # About two million values a block: the NaN-aware ranking widens them to float64.
    step = max(1, (1 << 21) // max(m, 1))
    for start in range(0, count, step):
        block = rows[start : start + step].float() / denominator  # NaN if dead
        order = top_columns(block, n)
        neurons[start : start + len(block)] = order
        values[start : start + len(block)] = torch.gather(block, 1, order)
    return _host(neurons), _host(values)


def ood_scores(ind_means: Any, ind_max: Any, ood_means: Any, ood_max: Any) -> OODScores:
    """Novelty (normalized and raw), spurious score and activation ratio of one OOD
    set, per neuron.

    Takes category means ([C, M], from :func:`category_means`) and per-neuron maxima
    ([M], from :func:`max_per_neuron`), so that the InD side is computed once for
    all OOD sets.
    """
    ind_max = as_numpy(ind_max).astype(np.float32)
    return OODScores(
        novelty_raw=raw_novelty(ind_means, ood_means),
        spurious=spurious(ind_means, ood_means),
        activation_ratio=ratio_of_maxima(ind_max, ood_max),
        ind_max=ind_max,
    )


# -- distributions and examples below the top (the neuron view) ---------------------


@dataclasses.dataclass(frozen=True)
class NeuronDistributions:
    """What the neuron view shows of one layer on one dataset beyond the top images.

    ``counts`` int32 ``[M, B]``: each neuron's histogram over its shared range (finite
    activations only); ``fire_fraction`` float32 ``[M]``: the fraction of images above
    0 (NaN without images); ``bottom_indices`` / ``bottom_values`` ``[M, k]``: the
    lowest activations (:func:`bottom_k`); ``interval_indices`` int32 ``[M, bands,
    n]`` (-1: no image) and ``interval_values`` float32 (NaN: no image): up to ``n``
    images per activation band, highest band first (:func:`neuron_distributions`);
    ``top_indices`` int32 / ``top_values`` float32 ``[M, k]``: the highest activations,
    the very arrays of :func:`top_k`, read off the same sort.
    """

    counts: np.ndarray
    fire_fraction: np.ndarray
    bottom_indices: np.ndarray
    bottom_values: np.ndarray
    interval_indices: np.ndarray
    interval_values: np.ndarray
    top_indices: np.ndarray
    top_values: np.ndarray


def histogram_range(
    datasets: Sequence[Any], statistics: Sequence[DatasetStatistics] | None = None
) -> np.ndarray:
    """The range each neuron's activation histograms share over ``datasets``.

    Args:
        datasets: the ``[N_d, M]`` activations of every dataset of a record.
        statistics: each dataset's :func:`dataset_statistics`, in the same order, if
            made: their maxima and minima are the range wherever they are finite, so
            only the neurons with a NaN or an infinity are read again.

    Returns:
        float32 ``[M, 2]``: ``low = min(0, lowest finite activation)`` and ``high`` the
        highest finite activation over all of them, so ``[0, max]`` after ReLU;
        ``high = low + 1`` where that leaves no width (a neuron that is always 0, or
        constant, or never finite).
    """
    if statistics is not None and len(statistics) != len(datasets):
        raise ValueError(
            f"statistics must have one entry per dataset, got {len(statistics)} for "
            f"{len(datasets)} datasets"
        )
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    for number, activations in enumerate(datasets):
        found = None if statistics is None else statistics[number]
        lows, highs = _finite_range(_rows(activations, "activations"), found)
        lows, highs = lows.cpu(), highs.cpu()  # [M] each: the sets may be on several devices
        low = lows if low is None else torch.minimum(low, lows)
        high = highs if high is None else torch.maximum(high, highs)
    if low is None or high is None:
        raise ValueError("histogram_range needs the activations of at least one dataset")
    low = torch.clamp(low, max=0.0)
    high = torch.where(high > low, high, low + 1)
    return torch.stack([low, high], dim=1).numpy().astype(np.float32)


def _finite_range(
    rows: torch.Tensor, statistics: DatasetStatistics | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``[M]`` each neuron's lowest and highest finite activation (inf and -inf
    where none is finite), on the device of ``rows``; from ``statistics`` (their
    minima and maxima) where given."""
    n, m = rows.shape
    if n == 0:
        empty = torch.full((m,), torch.inf, device=rows.device)
        return empty, -empty
    if statistics is None:
        low, high = rows.amin(dim=0).float(), rows.amax(dim=0).float()
    else:
        if statistics.minima.shape != (m,) or statistics.maxima.shape != (m,):
            raise ValueError(
                f"statistics hold minima {statistics.minima.shape} and maxima "
                f"{statistics.maxima.shape} for activations of {m} neurons: pass each "
                "dataset's own dataset_statistics, in the order of the datasets"
            )
        # (copies: the columns below are written)
        low = torch.tensor(statistics.minima, dtype=torch.float32, device=rows.device)
        high = torch.tensor(statistics.maxima, dtype=torch.float32, device=rows.device)
    # Only the columns with a NaN or an infinity need a second look, without them.
    odd = torch.nonzero(~(torch.isfinite(low) & torch.isfinite(high)))[:, 0]
    for start in range(0, len(odd), _COLUMN_BLOCK):
        columns = odd[start : start + _COLUMN_BLOCK]
        block = rows[:, columns].float()
        finite = torch.isfinite(block)
        low[columns] = torch.where(finite, block, torch.inf).amin(dim=0)
        high[columns] = torch.where(finite, block, -torch.inf).amax(dim=0)
    return low, high


def bottom_k(activations: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the ``k`` images with the lowest activation.

    The rule of :func:`top_k` on the negated activations: ``(indices [M, k], values
    [M, k])``, lowest first, ties to the lower image index, NaN last; fewer when
    N < k. Computed on float16 values (other input is rounded to float16 first, as
    the log stores it), by one stable sort per neuron.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    acts = _float16_matrix(activations)
    n, m = acts.shape
    k = min(k, n)
    indices = np.empty((m, k), dtype=np.int64)
    values = np.empty((m, k), dtype=np.float32)

    def fill(start: int, block: _SortedColumns) -> None:
        lowest = block.lowest(k)
        indices[start : start + block.rows] = lowest
        values[start : start + block.rows] = block.values(lowest)

    _each_sorted_column_block(acts, fill)
    return indices, values


def neuron_distributions(
    activations: Any,
    value_range: Any,
    maxima: Any,
    *,
    k: int,
    bins: int,
    bands: int,
    per_band: int,
    engine: Literal["auto", "numpy", "torch"] = "auto",
) -> NeuronDistributions:
    """Each neuron's histogram, firing fraction, bottom images and interval examples on
    one dataset, from one stable sort per neuron.

    Args:
        activations: ``[N, M]``, float16 as stored (other input is rounded to it); a
            tensor on a device is sorted there, in blocks of neurons that take at most
            ``_DEVICE_SORT_BYTES`` (16 bytes a value), and only the results cross to
            the host.
        value_range: float32 ``[M, 2]`` the histograms' shared range
            (:func:`histogram_range`); the bins are
            ``tensorboard_plugin_deephys.log.derived.histogram_edges``.
        maxima: float32 ``[M]`` each neuron's maximum on this dataset (stored as
            ``maxima``); its bands are
            ``tensorboard_plugin_deephys.log.derived.interval_edges``, ``bands`` of equal
            width over ``(0, max]``, none where the maximum is not positive and finite.
        k: bottom images per neuron (:func:`bottom_k`).
        bins: histogram bins.
        bands: activation bands.
        per_band: images per band: of the band's ``c`` images, ordered by activation
            as :func:`top_k` orders them (highest first, ties to the lower index), the
            ones at positions ``(2 s + 1) c // (2 n)`` for ``s < n = min(per_band, c)``
            (the middles of ``n`` equal runs; all of them when ``c <= per_band``).
        engine: how the neurons are sorted: ``"numpy"``, NumPy's radix sort of 16-bit
            keys on the host's threads (the fastest on a CPU); ``"torch"``, torch's
            stable sort and searches on the device that holds ``activations``;
            ``"auto"``: torch for a tensor on a device other than the CPU, else NumPy.
            Both give the same arrays.
    """
    if k < 1 or bins < 1 or bands < 1 or per_band < 1:
        raise ValueError(
            f"k, bins, bands and per_band must be >= 1, got {k}, {bins}, {bands}, {per_band}"
        )
    on_device = isinstance(activations, torch.Tensor) and activations.device.type != "cpu"
    if engine == "torch" or (engine == "auto" and on_device):
        rows = as_float16(_rows(activations, "activations"))
        acts_shape = tuple(rows.shape)

        def each_block(work: Callable[[int, Any], None]) -> None:
            _each_device_block(rows, work)
    elif engine in ("auto", "numpy"):
        acts = _float16_matrix(activations)
        acts_shape = acts.shape

        def each_block(work: Callable[[int, Any], None]) -> None:
            _each_sorted_column_block(acts, work)
    else:
        raise ValueError(f"engine must be 'auto', 'numpy' or 'torch', got {engine!r}")
    n, m = acts_shape
    value_range = as_numpy(value_range).astype(np.float32)
    maxima = as_numpy(maxima).astype(np.float32)
    if value_range.shape != (m, 2) or maxima.shape != (m,):
        raise ValueError(
            f"value_range must have shape ({m}, 2) and maxima ({m},), got "
            f"{value_range.shape} and {maxima.shape}"
        )
    k = min(k, n)
    out = NeuronDistributions(
        counts=np.zeros((m, bins), dtype=np.int32),
        fire_fraction=np.full(m, np.nan, dtype=np.float32),
        bottom_indices=np.empty((m, k), dtype=np.int32),
        bottom_values=np.empty((m, k), dtype=np.float32),
        interval_indices=np.full((m, bands, per_band), -1, dtype=np.int32),
        interval_values=np.full((m, bands, per_band), np.nan, dtype=np.float32),
        top_indices=np.empty((m, k), dtype=np.int32),
        top_values=np.empty((m, k), dtype=np.float32),
    )

    def fill(start: int, block: _SortedColumns | _DeviceSortedColumns) -> None:
        rows = slice(start, start + block.rows)
        edges = derived.histogram_edges(value_range[rows], bins)
        below = block.count_below(_keys_at_least(edges))  # x < edge, NaN never
        below[:, -1] = block.count_at_most(_keys_at_most(edges[:, -1]))[:, 0]  # x <= high
        out.counts[rows] = np.diff(below, axis=1)
        positive = block.finite_or_inf - block.count_at_most(_ZERO_KEY)[:, 0]
        out.fire_fraction[rows] = positive / n
        lowest = block.lowest(k)
        out.bottom_indices[rows] = lowest
        out.bottom_values[rows] = block.values(lowest)
        indices, values = _interval_examples(block, maxima[rows], bands, per_band)
        out.interval_indices[rows], out.interval_values[rows] = indices, values
        highest = _highest(block, k)
        out.top_indices[rows] = highest
        out.top_values[rows] = block.values(highest)

    each_block(fill)
    return out


def _interval_examples(
    block: _SortedColumns | _DeviceSortedColumns,
    maxima: np.ndarray,
    bands: int,
    per_band: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``[B, bands, per_band]`` image indices (-1: none) and activations (NaN: none)."""
    edges = derived.interval_edges(maxima, bands)  # [B, bands + 1], NaN: no bands
    alive = np.isfinite(edges[:, :1])
    # above[:, j]: images above edges[:, j], the first of them in descending order
    above = block.finite_or_inf[:, None] - block.count_at_most(_keys_at_most(edges))
    above = np.where(alive, above, 0)
    high_first = above[:, ::-1]  # above the upper edge of each band, highest band first
    start, count = high_first[:, :-1], high_first[:, 1:] - high_first[:, :-1]
    shown = np.minimum(count, per_band)[..., None]
    slot = np.arange(per_band)
    rank = start[..., None] + (2 * slot + 1) * count[..., None] // (2 * np.maximum(shown, 1))
    filled = slot < shown
    rank = np.where(filled, rank, 0)  # its rank among the finite, highest first
    picked = block.order_descending(rank.reshape(block.rows, -1)).reshape(rank.shape)
    values = block.values(picked.reshape(block.rows, -1)).reshape(rank.shape)
    return np.where(filled, picked, -1), np.where(filled, values, np.nan)


def _highest(block: _SortedColumns | _DeviceSortedColumns, k: int) -> np.ndarray:
    """``[B, k]`` the images of each row's ``k`` highest values in :func:`top_k`'s
    order: highest first, ties to the lower index, then the NaN ones by index (the last
    of the ascending order, which keeps them in index order)."""
    rank = np.broadcast_to(np.arange(k), (block.rows, k))
    valued = rank < block.finite_or_inf[:, None]
    return np.where(valued, block.order_descending(rank), block.at(rank))


# Float16 values as uint16 keys in the same order (see _order_keys): +0's key.
_ZERO_KEY = 0x8000
_NAN_KEY = 0xFFFF
_KEYS = 1 << 16


def _float16_matrix(activations: Any) -> np.ndarray:
    acts = _matrix(activations, "activations")
    return acts if acts.dtype == np.float16 else acts.astype(np.float16)


def _order_keys(values: np.ndarray) -> np.ndarray:
    """uint16 keys of float16 ``values`` that sort as the values do: -0 as +0, every NaN
    above +inf (last, as in :func:`top_k`), so a stable sort of the keys orders the
    values lowest first, ties to the lower index, NaN last."""
    bits = np.ascontiguousarray(values, dtype=np.float16).view(np.uint16)
    # Negative values flip every bit, the others only the sign bit: keys ^= 0xFFFF or
    # 0x8000, from the sign spread over all 16 bits by an arithmetic shift.
    keys = (bits.view(np.int16) >> 15).view(np.uint16)
    keys |= 0x8000
    keys ^= bits
    keys[keys == 0x7FFF] = _ZERO_KEY  # -0.0 (only its key is 0x7FFF)
    keys[(bits & 0x7FFF) > 0x7C00] = _NAN_KEY
    return keys


def _keys_at_least(edges: np.ndarray) -> np.ndarray:
    """The keys of the lowest float16 ``>= edges`` (float64): for a float16 ``x``,
    ``x >= edge`` exactly when its key is at least this one. NaN edges give NaN's key."""
    with np.errstate(over="ignore", invalid="ignore"):
        near = edges.astype(np.float16)
        near = np.where(near.astype(np.float64) < edges, np.nextafter(near, np.inf), near)
    return _order_keys(near)


def _keys_at_most(edges: np.ndarray) -> np.ndarray:
    """The keys of the highest float16 ``<= edges``: ``x <= edge`` exactly when the key
    of ``x`` is at most this one (and ``x`` is not NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        near = edges.astype(np.float16)
        near = np.where(near.astype(np.float64) > edges, np.nextafter(near, -np.inf), near)
    return _order_keys(near)


class _SortedColumns:
    """A block of neurons (columns ``start`` onwards of ``acts``) as rows of order keys
    (``[B, N]``, see :func:`_order_keys`), each row's images in the stable ascending
    order of their keys, with counts by key through one search over all rows (each
    row's sorted keys offset by its row number times 2**16)."""

    def __init__(self, acts: np.ndarray, start: int, keys: np.ndarray) -> None:
        self.rows, self.n = keys.shape
        self._acts = acts
        self._columns = np.arange(start, start + self.rows)[:, None]
        self.order = np.argsort(keys, axis=1, kind="stable")  # a radix sort for uint16
        # (int32: a block's rows times 2**16 fit, and the searches touch half the bytes)
        self._offsets = np.arange(self.rows, dtype=np.int32)[:, None] * _KEYS
        self._sorted_keys = np.take_along_axis(keys, self.order, axis=1)
        self._flat = (self._sorted_keys + self._offsets).ravel()
        # values that are not NaN, finite or infinite: the first of them in the order
        self.finite_or_inf = self.count_below(np.full((self.rows, 1), _NAN_KEY))[:, 0]

    def _search(self, keys: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int32).reshape(self.rows, -1)
        found = np.searchsorted(self._flat, keys + self._offsets, side=side)
        return found - np.arange(self.rows)[:, None] * self.n

    def count_below(self, keys: np.ndarray) -> np.ndarray:
        """``[B, q]``: per row, how many keys are below each of its ``q`` keys."""
        return self._search(keys, "left")

    def count_at_most(self, keys) -> np.ndarray:
        """``[B, q]``: per row, how many keys are at most each of its keys (a scalar key
        is the same for every row)."""
        return self._search(np.broadcast_to(keys, (self.rows,) + np.shape(keys)[1:]), "right")

    def order_descending(self, rank: np.ndarray) -> np.ndarray:
        """``[B, q]`` image indices at the given ranks of each row's non-NaN values in
        :func:`top_k`'s order (highest first, ties to the lower index)."""
        finite = self.finite_or_inf[:, None]
        position = np.clip(finite - 1 - rank, 0, self.n - 1)  # the value's ascending place
        keys = np.take_along_axis(self._sorted_keys, position, axis=1)
        first = self.count_below(keys)  # the value's tied images, ascending by index
        last = self.count_at_most(keys) - 1
        ascending = first + rank - (finite - 1 - last)
        return np.take_along_axis(self.order, np.clip(ascending, 0, self.n - 1), axis=1)

    def values(self, indices: np.ndarray) -> np.ndarray:
        """``[B, q]`` float32 activations of the images ``indices`` of each row."""
        return self._acts[indices, self._columns].astype(np.float32)

    def lowest(self, k: int) -> np.ndarray:
        """``[B, k]`` the images of each row's ``k`` lowest values (NaN last)."""
        return self.order[:, :k]

    def at(self, position: np.ndarray) -> np.ndarray:
        """``[B, q]`` the images at the given places of each row's ascending order."""
        return np.take_along_axis(self.order, position, axis=1)


class _DeviceSortedColumns:
    """:class:`_SortedColumns` on the device that holds the activations: the same
    questions, the same answers (NumPy arrays, small), from torch's stable sort of
    int32 keys and its batched searches; only the answers cross to the host."""

    def __init__(self, rows: torch.Tensor, start: int, stop: int) -> None:
        self._block = rows[:, start:stop].T.contiguous()  # [B, N] float16
        self.rows, self.n = self._block.shape
        bits = self._block.view(torch.int16).to(torch.int32) & 0xFFFF
        keys = torch.where(bits >= 0x8000, ~bits & 0xFFFF, bits | 0x8000)
        keys = torch.where(bits == 0x8000, _ZERO_KEY, keys)
        keys = torch.where((bits & 0x7FFF) > 0x7C00, _NAN_KEY, keys)
        self._sorted_keys, self._order = torch.sort(keys, dim=1, stable=True)
        self.finite_or_inf = self.count_below(np.full((self.rows, 1), _NAN_KEY))[:, 0]

    def _device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        # (a copy: the arrays asked about are small, and may be read-only broadcasts)
        return torch.from_numpy(np.array(array)).to(self._block.device, dtype)

    def _search(self, keys: torch.Tensor, side: Literal["left", "right"]) -> torch.Tensor:
        return torch.searchsorted(self._sorted_keys, keys.contiguous(), side=side)

    def count_below(self, keys: np.ndarray) -> np.ndarray:
        """``[B, q]``: per row, how many keys are below each of its ``q`` keys."""
        found = self._device(np.asarray(keys).reshape(self.rows, -1), torch.int32)
        return _host(self._search(found, "left"))

    def count_at_most(self, keys) -> np.ndarray:
        """``[B, q]``: per row, how many keys are at most each of its keys (a scalar key
        is the same for every row)."""
        wide = np.broadcast_to(keys, (self.rows,) + np.shape(keys)[1:]).reshape(self.rows, -1)
        return _host(self._search(self._device(wide, torch.int32), "right"))

    def order_descending(self, rank: np.ndarray) -> np.ndarray:
        """``[B, q]`` image indices at the given ranks of each row's non-NaN values in
        :func:`top_k`'s order (highest first, ties to the lower index)."""
        rank_t = self._device(rank, torch.int64)
        finite = self._device(self.finite_or_inf, torch.int64)[:, None]
        position = (finite - 1 - rank_t).clamp(0, self.n - 1)  # the value's ascending place
        keys = torch.gather(self._sorted_keys, 1, position)
        first = self._search(keys, "left")  # the value's tied images, ascending by index
        last = self._search(keys, "right") - 1
        ascending = (first + rank_t - (finite - 1 - last)).clamp(0, self.n - 1)
        return _host(torch.gather(self._order, 1, ascending))

    def values(self, indices: np.ndarray) -> np.ndarray:
        """``[B, q]`` float32 activations of the images ``indices`` of each row."""
        found = torch.gather(self._block, 1, self._device(indices, torch.int64))
        return _host(found.float())

    def lowest(self, k: int) -> np.ndarray:
        """``[B, k]`` the images of each row's ``k`` lowest values (NaN last)."""
        return _host(self._order[:, :k])

    def at(self, position: np.ndarray) -> np.ndarray:
        """``[B, q]`` the images at the given places of each row's ascending order."""
        return _host(torch.gather(self._order, 1, self._device(position, torch.int64)))


# A sorted block holds 16 bytes per value (uint16 keys and sorted keys, int64 order,
# int32 searchable keys): 49 MiB for 64 neurons of 50,000 images. Blocks are sorted on
# several threads while together they fit in _SORT_BYTES.
_SORT_BYTES_PER_VALUE = 16
_SORT_BYTES = 128 << 20
# On a device, a block of neurons takes 16 bytes a value while it is sorted (int32 keys
# and sorted keys, int64 order), and blocks take at most this much (256 MiB: 335
# neurons of 50,000 images); one block at a time.
_DEVICE_SORT_BYTES_PER_VALUE = 16
_DEVICE_SORT_BYTES = 256 << 20
# Rows of a column block made into keys and transposed at a time (a tile that stays in
# the cache: twice as fast as transposing the block at once).
_TILE_ROWS = 1024


def _each_sorted_column_block(
    acts: np.ndarray, work: Callable[[int, _SortedColumns], None]
) -> None:
    """``work(first neuron, _SortedColumns)`` for each block of ``_COLUMN_BLOCK`` neurons,
    on as many threads as torch uses while their blocks fit in ``_SORT_BYTES`` (NumPy's
    sorts and searches release the GIL; each block writes its own rows of the results,
    so the threads change no result)."""
    n, m = acts.shape
    if n == 0:
        return

    def run(start: int) -> None:
        stop = min(start + _COLUMN_BLOCK, m)
        keys = np.empty((stop - start, n), dtype=np.uint16)
        for row in range(0, n, _TILE_ROWS):
            tile = acts[row : row + _TILE_ROWS, start:stop]
            keys[:, row : row + _TILE_ROWS] = _order_keys(tile).T
        work(start, _SortedColumns(acts, start, keys))

    fit = _SORT_BYTES // (_SORT_BYTES_PER_VALUE * _COLUMN_BLOCK * n)
    _on_threads(run, range(0, m, _COLUMN_BLOCK), min(torch.get_num_threads(), fit))


def _each_device_block(
    rows: torch.Tensor, work: Callable[[int, _DeviceSortedColumns], None]
) -> None:
    """``work(first neuron, _DeviceSortedColumns)`` for each block of neurons that fits
    in ``_DEVICE_SORT_BYTES``, one after the other, on the device of ``rows``."""
    n, m = rows.shape
    if n == 0:
        return
    width = max(1, min(m, _DEVICE_SORT_BYTES // (_DEVICE_SORT_BYTES_PER_VALUE * n)))
    for start in range(0, m, width):
        work(start, _DeviceSortedColumns(rows, start, min(start + width, m)))
