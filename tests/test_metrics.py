"""Metrics against slow, obvious references on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deephys_lightning import metrics


def _top_k_reference(acts: np.ndarray, k: int):
    acts = acts.astype(np.float32)
    indices, values = [], []
    for j in range(acts.shape[1]):
        col = acts[:, j]
        key = [(1 if np.isnan(v) else 0, 0.0 if np.isnan(v) else -v, i) for i, v in enumerate(col)]
        order = [i for *_, i in sorted(key)][:k]
        indices.append(order)
        values.append(col[order])
    return np.array(indices), np.array(values)


@settings(max_examples=60, deadline=None)
@given(
    acts=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        # few distinct values, so that ties are common
        elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]),
    ),
    k=st.integers(1, 15),
)
def test_top_k_matches_the_loop_reference(acts, k):
    indices, values = metrics.top_k(acts, k)
    ref_indices, ref_values = _top_k_reference(acts, k)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(values, ref_values)
    assert values.dtype == np.float32


def test_top_k_accepts_torch_and_rejects_bad_input():
    indices, _ = metrics.top_k(torch.tensor([[1.0], [3.0], [2.0]]), 2)
    assert indices.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="2-D"):
        metrics.top_k(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k(np.zeros((3, 2)), 0)
