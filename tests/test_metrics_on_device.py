"""The record's kernels computed where the activations are (issue 27): a torch tensor
is computed on its own device, and every array equals today's host implementation
(NumPy input) exactly, on random data with ties, NaN, +-inf, dead neurons, k > N,
one and 1,000 classes. The CPU cases run everywhere; the same cases on a CUDA device
run where there is one (marked ``cuda``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deephys_lightning import metrics
from tensorboard_plugin_deephys.log import metadata

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def _activations(seed: int, n: int, m: int, *, odd: bool) -> np.ndarray:
    """float16 ``[n, m]``: ReLU of a normal rounded to a few values (ties), a dead
    neuron, and with ``odd`` NaN, +inf and -inf in some cells."""
    rng = np.random.default_rng(seed)
    acts = np.maximum(np.round(rng.normal(size=(n, m)) * 4) / 4, 0).astype(np.float16)
    if m > 2:
        acts[:, 1] = 0  # dead
        acts[:, 2] = 1.5  # constant
    if odd and n > 3:
        cells = rng.integers(0, n, 6), rng.integers(0, m, 6)
        acts[cells[0][:2], cells[1][:2]] = np.nan
        acts[cells[0][2:4], cells[1][2:4]] = np.inf
        acts[cells[0][4:], cells[1][4:]] = -np.inf
        acts[3, 0] = -0.0
    return acts


CASES = [
    # (seed, images, neurons, classes, odd values)
    (0, 300, 70, 10, False),
    (1, 300, 70, 10, True),
    (2, 5, 9, 1, True),  # k > N, one class
    (3, 2000, 40, 1000, True),  # 1,000 classes, most without images
    (4, 1, 3, 2, False),
]


def _same(found, expected) -> None:
    np.testing.assert_array_equal(np.asarray(found), np.asarray(expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_view_kernels_on_a_device_equal_the_host_implementation(device, case):
    seed, n, m, c, odd = case
    acts = _activations(seed, n, m, odd=odd)
    rng = np.random.default_rng(seed + 100)
    labels = rng.integers(0, c, n)
    predictions = np.where(rng.random(n) < 0.7, labels, rng.integers(0, c, n))
    on_device = torch.from_numpy(acts).to(device)

    means, maxima, minima = metrics.dataset_statistics(acts, labels, c)
    found = metrics.dataset_statistics(on_device, labels, c)
    _same(found[0], means)
    _same(found[1], maxima)
    _same(found[2], minima)
    _same(metrics.max_per_neuron(on_device), metrics.max_per_neuron(acts))
    for k in (1, 32):
        for got, want in zip(metrics.top_k(on_device, k), metrics.top_k(acts, k), strict=True):
            _same(got, want)
    ind_max = maxima
    for got, want in zip(
        metrics.top_neurons(on_device, ind_max, 16),
        metrics.top_neurons(acts, ind_max, 16),
        strict=True,
    ):
        _same(got, want)
    _same(metrics.histogram_range([on_device]), metrics.histogram_range([acts]))
    _same(metrics.histogram_range([on_device], [found]), metrics.histogram_range([acts]))
    for got_sets, want_sets in zip(
        metrics.confusion_sets_top_neurons(on_device, labels, predictions, c, 16, ind_max),
        metrics.confusion_sets_top_neurons(acts, labels, predictions, c, 16, ind_max),
        strict=True,
    ):
        for got, want in zip(got_sets, want_sets, strict=True):
            _same(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_distributions_sorted_by_torch_equal_numpys_radix_sort(device, case, monkeypatch):
    seed, n, m, _, odd = case
    acts = _activations(seed, n, m, odd=odd)
    value_range = metrics.histogram_range([acts])
    maxima = metrics.max_per_neuron(acts)
    # Small device blocks, so that several blocks and a last partial one are sorted.
    monkeypatch.setattr(metrics, "_DEVICE_SORT_BYTES", 16 * max(n, 1) * 7)

    def distributions(activations, engine):
        return metrics.neuron_distributions(
            activations,
            value_range,
            maxima,
            k=32,
            bins=metadata.HISTOGRAM_BINS,
            bands=metadata.INTERVAL_BANDS,
            per_band=metadata.INTERVAL_IMAGES,
            engine=engine,
        )

    expected = distributions(acts, "numpy")
    # the top images read off the sort are those of top_k, exactly
    top_indices, top_values = metrics.top_k(acts, 32)
    _same(expected.top_indices, top_indices)
    _same(expected.top_values, top_values)
    on_device = torch.from_numpy(acts).to(device)
    for found in (distributions(on_device, "torch"), distributions(on_device, "auto")):
        for field in (
            "counts",
            "fire_fraction",
            "bottom_indices",
            "bottom_values",
            "interval_indices",
            "interval_values",
            "top_indices",
            "top_values",
        ):
            _same(getattr(found, field), getattr(expected, field))


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine must be"):
        metrics.neuron_distributions(
            np.zeros((2, 2), np.float16),
            np.array([[0, 1], [0, 1]], np.float32),
            np.zeros(2, np.float32),
            k=1,
            bins=2,
            bands=2,
            per_band=1,
            engine="gpu",  # type: ignore[arg-type]
        )


def test_sums_are_exact_so_the_order_of_the_rows_does_not_matter():
    """A GPU adds with atomics, in no fixed order: the category means and confusion
    sets sum each block of float16 rows exactly (float64), so any order of the rows
    within a block gives the same bits, and the means are the exact means rounded."""
    rng = np.random.default_rng(11)
    n, m, classes = 1800, 64, 7  # one block of rows
    acts = (rng.normal(size=(n, m)) * 37).astype(np.float16)  # generic values, both signs
    labels = rng.integers(0, classes, n)
    predictions = np.where(rng.random(n) < 0.5, labels, rng.integers(0, classes, n))
    shuffled = rng.permutation(n)
    means, _, _ = metrics.dataset_statistics(acts, labels, classes)
    again, _, _ = metrics.dataset_statistics(acts[shuffled], labels[shuffled], classes)
    _same(again, means)
    wide = acts.astype(np.float64)
    for c in range(classes):
        exact = wide[labels == c].sum(axis=0) / np.count_nonzero(labels == c)
        _same(means[c], exact.astype(np.float32))
    ind_max = metrics.max_per_neuron(np.abs(acts))
    found = metrics.confusion_sets_top_neurons(acts, labels, predictions, classes, 8, ind_max)
    moved = metrics.confusion_sets_top_neurons(
        acts[shuffled], labels[shuffled], predictions[shuffled], classes, 8, ind_max
    )
    for found_sets, moved_sets in zip(found, moved, strict=True):
        for got, want in zip(found_sets, moved_sets, strict=True):
            _same(got, want)
