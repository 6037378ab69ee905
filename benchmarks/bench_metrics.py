"""Deephys metrics at ImageNet scale, beside slow loop references, in one run.

    python benchmarks/bench_metrics.py [--images 50000] [--neurons 2048] [--classes 1000]

Random float16 activations (ReLU of a normal) for an InD and an OOD set, random
labels. For each function: the vectorised time, the reference time (per-class or
per-neuron loops, scipy.stats.spearmanr per neuron) and the speed-up. Then the time
of all scores for one OOD set (category means and maxima of both sets, novelty,
spurious score, activation ratio). Targets: under 2 s, and >= 20x the reference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import spearmanr

from deephys_lightning import metrics


def timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


# -- references: the obvious loops ---------------------------------------------------------


def ref_category_means(acts, labels, num_classes):
    """Per-neuron loop: one weighted bincount per neuron."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    out = np.empty((num_classes, acts.shape[1]), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(acts.shape[1]):
            sums = np.bincount(labels, weights=acts[:, j].astype(np.float64), minlength=num_classes)
            out[:, j] = sums / counts
    return out


def per_class_category_means(acts, labels, num_classes):
    """A stronger reference: a loop over classes, vectorised over neurons."""
    out = np.full((num_classes, acts.shape[1]), np.nan, dtype=np.float32)
    for c in range(num_classes):
        rows = acts[labels == c]
        if len(rows):
            out[c] = rows.astype(np.float64).mean(axis=0)
    return out


def ref_max(acts):
    return np.array([acts[:, j].astype(np.float32).max() for j in range(acts.shape[1])])


def ref_novelty(ind_means, ood_means):
    return np.array(
        [np.nanmax(ind_means[:, j]) - np.nanmax(ood_means[:, j]) for j in range(ind_means.shape[1])]
    )


def ref_spurious(ind_means, ood_means):
    out = np.empty(ind_means.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(ind_means.shape[1]):
            keep = np.isfinite(ind_means[:, j]) & np.isfinite(ood_means[:, j])
            out[j] = 1 - abs(spearmanr(ind_means[keep, j], ood_means[keep, j]).statistic)
    return out


def ref_top_k(acts, k):
    indices = np.empty((acts.shape[1], k), dtype=np.int64)
    for j in range(acts.shape[1]):
        column = acts[:, j].astype(np.float32)
        indices[j] = np.argsort(-column, kind="stable")[:k]
    return indices


def ref_confusion(labels, preds, num_classes):
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    for a, b in zip(labels.tolist(), preds.tolist(), strict=True):
        out[a, b] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=32)
    args = parser.parse_args()
    n, m, c = args.images, args.neurons, args.classes

    rng = np.random.default_rng(0)
    print(f"data: InD and OOD activations {n:,} x {m:,} float16, {c:,} classes")
    ind = np.maximum(rng.standard_normal((n, m), dtype=np.float32), 0).astype(np.float16)
    ood = np.maximum(rng.standard_normal((n, m), dtype=np.float32) * 0.8, 0).astype(np.float16)
    ind_labels = rng.integers(0, c, n)
    ood_labels = rng.integers(0, c, n)
    preds = rng.integers(0, c, n)

    rows = []

    def compare(name, fast, slow, check):
        fast_out, fast_s = timed(*fast)
        slow_out, slow_s = timed(*slow)
        check(fast_out, slow_out)
        rows.append((name, fast_s, slow_s))

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)

    compare(
        "category_means (one set)",
        (metrics.category_means, ood, ood_labels, c),
        (ref_category_means, ood, ood_labels, c),
        close,
    )
    compare(
        "  vs a per-class loop",
        (metrics.category_means, ood, ood_labels, c),
        (per_class_category_means, ood, ood_labels, c),
        close,
    )
    ind_means = metrics.category_means(ind, ind_labels, c)
    ood_means = metrics.category_means(ood, ood_labels, c)
    compare("max_per_neuron (one set)", (metrics.max_per_neuron, ood), (ref_max, ood), close)
    ind_max, ood_max = metrics.max_per_neuron(ind), metrics.max_per_neuron(ood)
    compare(
        "novelty (raw)",
        (metrics.raw_novelty, ind_means, ood_means),
        (ref_novelty, ind_means, ood_means),
        close,
    )
    compare(
        "spurious",
        (metrics.spurious, ind_means, ood_means),
        (ref_spurious, ind_means, ood_means),
        close,
    )
    compare(
        "activation_ratio (from maxima)",
        (metrics.ratio_of_maxima, ind_max, ood_max),
        (lambda a, b: np.array([b[j] / a[j] for j in range(len(a))]), ind_max, ood_max),
        close,
    )
    compare(
        "confusion_matrix",
        (metrics.confusion_matrix, ood_labels, preds, c),
        (ref_confusion, ood_labels, preds, c),
        np.testing.assert_array_equal,
    )
    compare(
        f"top_k (k={args.top_k}, one set)",
        (lambda a, k: metrics.top_k(a, k)[0], ood, args.top_k),
        (ref_top_k, ood, args.top_k),
        np.testing.assert_array_equal,
    )

    print(f"\n{'function':34s} {'vectorised':>11s} {'reference':>11s} {'speed-up':>9s}")
    for name, fast_s, slow_s in rows:
        print(f"{name:34s} {fast_s:10.3f}s {slow_s:10.3f}s {slow_s / fast_s:8.1f}x")

    def all_scores():
        im, imax, _ = metrics.dataset_statistics(ind, ind_labels, c)
        om, omax, _ = metrics.dataset_statistics(ood, ood_labels, c)
        return metrics.ood_scores(im, imax, om, omax)

    def all_scores_reference():
        im = ref_category_means(ind, ind_labels, c)
        om = ref_category_means(ood, ood_labels, c)
        return ref_novelty(im, om), ref_spurious(im, om), ref_max(ood) / ref_max(ind)

    scores, fast_s = timed(all_scores)
    (nov, spu, ratio), slow_s = timed(all_scores_reference)
    close(scores.novelty_raw, nov)
    close(scores.spurious, spu)
    close(scores.activation_ratio, ratio)
    print(
        f"\nall scores of one OOD set (both sets' means and maxima, novelty, spurious, ratio):\n"
        f"  vectorised {fast_s:.3f} s   reference {slow_s:.3f} s   speed-up {slow_s / fast_s:.1f}x"
        f"   (targets: < 2 s, >= 20x)"
    )


if __name__ == "__main__":
    main()
