"""Metrics against slow, obvious references (scipy, per-neuron loops) on random data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import spearmanr

from deephys_lightning import metrics

# Few distinct values, so that ties are common.
TIE_PRONE = st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0])


def _acts(max_n=40, max_m=6, elements=TIE_PRONE, min_n=1):
    return hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=st.tuples(st.integers(min_n, max_n), st.integers(1, max_m)),
        elements=elements,
    )


# -- references -----------------------------------------------------------------------


def ref_category_means(acts, labels, num_classes):
    acts = acts.astype(np.float64)
    out = np.full((num_classes, acts.shape[1]), np.nan)
    for c in range(num_classes):
        for j in range(acts.shape[1]):
            values = [acts[i, j] for i in range(len(labels)) if labels[i] == c]
            if values:
                out[c, j] = sum(values) / len(values)
    return out


def ref_novelty(ind_means, ood_means):
    out = []
    for j in range(ind_means.shape[1]):
        a = [v for v in ind_means[:, j] if not np.isnan(v)]
        b = [v for v in ood_means[:, j] if not np.isnan(v)]
        out.append(max(a) - max(b) if a and b else np.nan)
    return np.array(out)


def ref_spurious(ind_means, ood_means):
    out = []
    for j in range(ind_means.shape[1]):
        keep = ~np.isnan(ind_means[:, j]) & ~np.isnan(ood_means[:, j])
        a, b = ind_means[keep, j], ood_means[keep, j]
        if len(a) < 2:
            out.append(np.nan)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr(a, b).statistic
        out.append(1 - abs(rho) if np.isfinite(rho) else np.nan)
    return np.array(out)


def ref_top_k(acts, k):
    acts = acts.astype(np.float32)
    indices, values = [], []
    for j in range(acts.shape[1]):
        col = acts[:, j]
        key = [(1 if np.isnan(v) else 0, 0.0 if np.isnan(v) else -v, i) for i, v in enumerate(col)]
        order = [i for *_, i in sorted(key)][:k]
        indices.append(order)
        values.append(col[order])
    return np.array(indices), np.array(values)


# -- category means, set means, confusion -------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(acts=_acts(), num_classes=st.integers(1, 6), data=st.data())
def test_category_means_match_the_loop(acts, num_classes, data):
    labels = data.draw(
        hnp.arrays(np.int64, acts.shape[0], elements=st.integers(0, num_classes - 1))
    )
    got = metrics.category_means(acts, labels, num_classes)
    assert got.dtype == np.float32 and got.shape == (num_classes, acts.shape[1])
    np.testing.assert_allclose(got, ref_category_means(acts, labels, num_classes), rtol=1e-6)


def test_category_means_nan_for_empty_and_errors_for_bad_labels():
    acts = np.array([[1.0, 2.0], [3.0, 4.0]])
    means = metrics.category_means(torch.tensor(acts), torch.tensor([0, 0]), 3)
    assert means[0].tolist() == [2.0, 3.0]
    assert np.isnan(means[1:]).all()
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        metrics.category_means(acts, np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="2 entries"):
        metrics.category_means(acts, np.array([0]), 3)
    with pytest.raises(ValueError, match="integers"):
        metrics.category_means(acts, np.array([0.0, 1.0]), 3)


def test_mean_activation_of_a_confusion_set():
    rng = np.random.default_rng(0)
    acts = rng.random((50, 4)).astype(np.float16)
    labels, preds = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    mask = (labels == 1) & (preds == 2)
    expected = acts[mask].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(metrics.mean_activation(acts, mask), expected, rtol=1e-6)
    np.testing.assert_allclose(
        metrics.mean_activation(acts, np.flatnonzero(mask)), expected, rtol=1e-6
    )
    assert np.isnan(metrics.mean_activation(acts, np.zeros(50, bool))).all()
    with pytest.raises(ValueError, match="boolean selection"):
        metrics.mean_activation(acts, np.zeros(3, bool))


def test_confusion_matrix_counts_pairs():
    labels, preds = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    cm = metrics.confusion_matrix(labels, preds, 3)
    expected = np.zeros((3, 3), int)
    for a, b in zip(labels, preds, strict=True):
        expected[a, b] += 1
    np.testing.assert_array_equal(cm, expected)
    with pytest.raises(ValueError, match="predictions must lie"):
        metrics.confusion_matrix(labels, preds + 1, 3)


# -- maxima and ratios ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(ind=_acts(max_m=4), data=st.data())
def test_activation_ratio_and_normalisation_match_the_loop(ind, data):
    ood = data.draw(
        hnp.arrays(ind.dtype, (data.draw(st.integers(1, 20)), ind.shape[1]), elements=TIE_PRONE)
    )
    ratio = metrics.activation_ratio(ind, ood)
    ind_max = ind.astype(np.float32).max(axis=0)
    normalized = metrics.normalized_activations(ood, metrics.max_per_neuron(ind))
    for j in range(ind.shape[1]):
        top_ind = max(float(v) for v in ind[:, j])
        top_ood = max(float(v) for v in ood[:, j])
        if top_ind <= 0:
            assert np.isnan(ratio[j]) and np.isnan(normalized[:, j]).all()
        else:
            assert ratio[j] == pytest.approx(top_ood / top_ind, rel=1e-6)
            np.testing.assert_allclose(normalized[:, j], ood[:, j] / ind_max[j], rtol=1e-6)


def test_ratio_shape_errors():
    with pytest.raises(ValueError, match="same neurons"):
        metrics.activation_ratio(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="ind_max must have shape"):
        metrics.normalized_activations(np.ones((2, 3)), np.ones(4))


# -- novelty and spurious ------------------------------------------------------------------

MEANS = st.one_of(TIE_PRONE, st.just(float("nan")), st.floats(-3, 3, width=32))


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 8), st.integers(1, 6)),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    data=st.data(),
)
def test_novelty_and_spurious_match_scipy(shape, dtype, data):
    ind = data.draw(hnp.arrays(dtype, shape, elements=MEANS))
    ood = data.draw(hnp.arrays(dtype, shape, elements=MEANS))
    if data.draw(st.booleans()):  # whole empty categories (NaN rows) as well
        ind[data.draw(st.integers(0, shape[0] - 1))] = np.nan
    nov, spu = metrics.raw_novelty(ind, ood), metrics.spurious(ind, ood)
    ref_ind, ref_ood = ind.astype(np.float64), ood.astype(np.float64)
    np.testing.assert_allclose(nov, ref_novelty(ref_ind, ref_ood), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(spu, ref_spurious(ref_ind, ref_ood), rtol=1e-5, atol=1e-6)
    finite = spu[np.isfinite(spu)]
    assert ((finite >= 0) & (finite <= 1)).all()


def test_spurious_is_nan_never_zero_for_constant_or_single_categories():
    ind = np.array([[1.0, 1.0, 3.0], [2.0, 1.0, np.nan]])
    ood = np.array([[5.0, 2.0, 1.0], [5.0, 3.0, 2.0]])
    score = metrics.spurious(ind, ood)
    # neuron 0: OOD constant; neuron 1: InD constant; neuron 2: one valid category
    assert np.isnan(score).all()
    one_category = metrics.spurious(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]))
    assert np.isnan(one_category).all()


def test_spurious_random_data_against_scipy_per_neuron():
    rng = np.random.default_rng(3)
    # 700 neurons: ranked in several blocks on several threads
    ind = np.round(rng.random((10, 700)), 1)  # ties
    ood = np.round(ind[::-1] * 0.5 + rng.random((10, 700)) * 0.5, 1)
    ood[rng.random(ood.shape) < 0.05] = np.nan
    np.testing.assert_allclose(metrics.spurious(ind, ood), ref_spurious(ind, ood), rtol=1e-5)


def test_means_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.raw_novelty(np.ones((3, 2)), np.ones((4, 2)))


def test_ood_scores_summary():
    ind_means = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]])
    ood_means = np.array([[0.5, 4.0, 1.0], [1.0, 1.0, 1.0]])
    scores = metrics.ood_scores(
        ind_means, np.array([4.0, 2.0, 0.0]), ood_means, np.array([2.0, 4.0, 1.0])
    )
    np.testing.assert_allclose(scores.novelty_raw, [2.0, -2.0, -1.0])
    np.testing.assert_allclose(scores.novelty, [0.5, -1.0, np.nan])  # raw / InD max
    np.testing.assert_allclose(scores.activation_ratio, [0.5, 2.0, np.nan])
    assert scores.dead.tolist() == [False, False, True]
    summary = scores.summary()
    # neuron 2 is dead (InD max 0): left out of every mean and fraction
    assert summary["dead_neurons"] == 1
    assert summary["novelty_mean"] == pytest.approx(-0.25)
    assert summary["novelty_positive_fraction"] == pytest.approx(1 / 2)
    assert summary["novelty_raw_mean"] == pytest.approx(0.0)
    assert summary["activation_ratio_mean"] == pytest.approx(1.25)
    assert summary["spurious_undefined"] == 0
    assert summary["spurious_mean"] == pytest.approx(0.0)


def authors_scores(ind_acts, ind_labels, ood_acts, ood_labels, num_classes):
    """The Deephys authors' tutorial cells, restated (mjgroth/deephys-aio,
    Colored_MNIST_Tutorial.ipynb: "Normalize and get average firing rates per category",
    "Calculate Spurious and Novelty scores"), with scipy.stats.mstats.spearmanr."""
    from scipy.stats.mstats import spearmanr

    norm = np.max(ind_acts, axis=0)
    ind_acts, ood_acts = ind_acts / norm, ood_acts / norm
    y_ind = np.array(
        [np.mean(ind_acts[np.where(ind_labels == c)[0], :], axis=0) for c in range(num_classes)]
    )
    y_ood = np.array(
        [np.mean(ood_acts[np.where(ood_labels == c)[0], :], axis=0) for c in range(num_classes)]
    )
    spurious = [1 - abs(spearmanr(y_ind[:, i], y_ood[:, i])[0]) for i in range(len(y_ind[0]))]
    novelty = list(np.max(y_ind, axis=0) - np.max(y_ood, axis=0))
    return np.array(novelty), np.array(spurious, dtype=np.float64)


def test_novelty_and_spurious_match_the_authors_code_on_random_data():
    rng = np.random.default_rng(11)
    num_classes, m = 6, 40
    ind = np.maximum(rng.normal(0, 1, (300, m)) * rng.uniform(0.01, 20, m), 0)
    ood = np.maximum(rng.normal(-0.2, 1.3, (200, m)) * rng.uniform(0.01, 20, m), 0)
    ind_labels = rng.integers(0, num_classes, 300)
    ood_labels = rng.integers(0, num_classes, 200)
    ind_means, ind_max, _ = metrics.dataset_statistics(ind, ind_labels, num_classes)
    ood_means, ood_max, _ = metrics.dataset_statistics(ood, ood_labels, num_classes)
    scores = metrics.ood_scores(ind_means, ind_max, ood_means, ood_max)
    novelty, spurious = authors_scores(ind, ind_labels, ood, ood_labels, num_classes)
    np.testing.assert_allclose(scores.novelty, novelty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.spurious, spurious, rtol=1e-5, atol=1e-6)
    # the raw novelty is the same difference in each neuron's own units
    np.testing.assert_allclose(scores.novelty_raw, novelty * ind.max(0), rtol=1e-5, atol=1e-5)


def test_dead_neurons_have_no_novelty_and_are_left_out():
    ind = np.array([[1.0, 0.0], [3.0, 0.0]])
    ood = np.array([[1.0, 2.0], [0.0, 1.0]])
    labels = np.array([0, 1])
    ind_means, ind_max, _ = metrics.dataset_statistics(ind, labels, 2)
    ood_means, ood_max, _ = metrics.dataset_statistics(ood, labels, 2)
    scores = metrics.ood_scores(ind_means, ind_max, ood_means, ood_max)
    assert np.isnan(scores.novelty[1]) and scores.dead.tolist() == [False, True]
    assert np.isfinite(scores.novelty_raw[1])  # -2: the raw one is kept, but not averaged
    summary = scores.summary()
    assert summary["dead_neurons"] == 1
    assert summary["novelty_raw_mean"] == pytest.approx(scores.novelty_raw[0])
    assert summary["novelty_mean"] == pytest.approx(scores.novelty[0])


# -- top k ------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    acts=_acts(max_n=120, max_m=5, elements=st.one_of(TIE_PRONE, st.just(float("nan")))),
    k=st.integers(1, 15),
)
def test_top_k_matches_the_loop_reference(acts, k):
    indices, values = metrics.top_k(acts, k)
    ref_indices, ref_values = ref_top_k(acts, k)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(values, ref_values)
    assert values.dtype == np.float32


def test_top_k_on_many_columns_and_rows():
    rng = np.random.default_rng(1)
    acts = np.round(rng.random((3000, 300)) * 20).astype(np.float16)  # many ties
    indices, values = metrics.top_k(acts, 7)
    ref_indices, ref_values = ref_top_k(acts, 7)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(values, ref_values)


def test_top_k_accepts_torch_and_rejects_bad_input():
    indices, _ = metrics.top_k(torch.tensor([[1.0], [3.0], [2.0]]), 2)
    assert indices.tolist() == [[1, 2]]
    assert metrics.top_k(np.ones((1, 1)), 5)[0].shape == (1, 1)  # N = 1
    with pytest.raises(ValueError, match="2-D"):
        metrics.top_k(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k(np.zeros((3, 2)), 0)


def test_confusion_top_neurons_match_the_set_means():
    rng = np.random.default_rng(5)
    acts = np.round(rng.random((400, 300)) * 6).astype(np.float16)  # ties across neurons
    labels, preds = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    pairs, neurons, means = metrics.confusion_top_neurons(acts, labels, preds, 4, 7)
    expected_pairs = sorted({(int(a), int(b)) for a, b in zip(labels, preds, strict=True)})
    assert [tuple(p) for p in pairs.tolist()] == expected_pairs
    for p, (a, b) in enumerate(expected_pairs):
        m = acts[(labels == a) & (preds == b)].astype(np.float64).mean(axis=0)
        order = sorted(range(300), key=lambda j: (-m[j], j))[:7]
        assert neurons[p].tolist() == order
        np.testing.assert_allclose(means[p], m[order], rtol=1e-5)


def test_confusion_sets_in_either_direction_match_the_set_means():
    rng = np.random.default_rng(6)
    acts = np.round(rng.random((500, 270)) * 6).astype(np.float16)
    labels, preds = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    preds[labels == 4] = 4  # class 4 is never confused
    preds[(labels == 1) & (preds == 0)] = 1  # 0 and 1 are confused one way only
    ind_max = rng.uniform(0.5, 8, 270).astype(np.float32)
    ind_max[[3, 100]] = 0  # dead neurons rank last
    directed, either = metrics.confusion_sets_top_neurons(acts, labels, preds, 5, 9, ind_max)
    expected = sorted(
        {
            (min(a, b), max(a, b))
            for a, b in zip(labels.tolist(), preds.tolist(), strict=True)
            if a != b
        }
    )
    assert [tuple(p) for p in either[0].tolist()] == expected
    assert (0, 1) in expected and not ((labels == 1) & (preds == 0)).any()
    for p, (a, b) in enumerate(expected):
        members = (labels == a) & (preds == b) | (labels == b) & (preds == a)
        m = acts[members].astype(np.float64).mean(axis=0) / np.where(ind_max > 0, ind_max, np.nan)
        order = sorted(range(270), key=lambda j: (np.isnan(m[j]), -np.nan_to_num(m[j]), j))[:9]
        assert either[1][p].tolist() == order
        np.testing.assert_allclose(either[2][p], m[order], rtol=1e-5)
    # the directed sets are normalized the same way
    pairs, neurons, means = directed
    a, b = pairs[0]
    m = acts[(labels == a) & (preds == b)].astype(np.float64).mean(axis=0)
    m = m / np.where(ind_max > 0, ind_max, np.nan)
    np.testing.assert_allclose(means[0], m[neurons[0]], rtol=1e-5)
    assert 3 not in neurons[0].tolist() and 100 not in neurons[0].tolist()


@pytest.mark.parametrize(
    ("seed", "n", "m", "classes"),
    [(7, 600, 90, 40), (8, 300, 20, 1000), (9, 50, 300, 3), (10, 8, 5, 1000)],
)
def test_confusion_sets_of_one_image_take_their_images_top_neurons(seed, n, m, classes):
    """The same sets with and without ``image_top``: many sets of one image (40 and
    1,000 classes: most wrong predictions are made once), some summed both ways, ties,
    NaN, +-inf, a dead neuron, fewer neurons than n."""
    rng = np.random.default_rng(seed)
    acts = np.round(rng.random((n, m)) * 6).astype(np.float16)
    acts[rng.integers(0, n, 3), rng.integers(0, m, 3)] = np.inf
    acts[rng.integers(0, n, 2), rng.integers(0, m, 2)] = np.nan
    labels = rng.integers(0, classes, n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))
    preds[:4], labels[:4] = labels[:4][::-1], preds[:4][::-1]  # confused both ways, some
    ind_max = metrics.max_per_neuron(acts)
    ind_max[0] = 0  # dead
    image_top = metrics.top_neurons(acts, ind_max, 16)
    found = metrics.confusion_sets_top_neurons(
        acts, labels, preds, classes, 16, ind_max, image_top=image_top
    )
    expected = metrics.confusion_sets_top_neurons(acts, labels, preds, classes, 16, ind_max)
    for found_sets, expected_sets in zip(found, expected, strict=True):
        for got, want in zip(found_sets, expected_sets, strict=True):
            np.testing.assert_array_equal(got, want)


def test_image_top_must_fit_the_activations():
    acts = np.ones((4, 3), np.float16)
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="pass it too"):
        metrics.confusion_sets_top_neurons(
            acts, labels, labels, 2, 2, image_top=(np.zeros((4, 2)), np.zeros((4, 2)))
        )
    with pytest.raises(ValueError, match=r"two \[4, 2\] arrays"):
        metrics.confusion_sets_top_neurons(
            acts, labels, labels, 2, 2, np.ones(3), image_top=(np.zeros((4, 3)), np.zeros((4, 3)))
        )
