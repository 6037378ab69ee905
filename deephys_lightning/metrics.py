"""Deephys metrics: pure, vectorised functions on activation matrices.

Arrays in, arrays out; NumPy only (torch tensors are accepted and converted). No
Lightning or TensorBoard import, so these can be used on any activations.

Example::

    >>> import numpy as np
    >>> acts = np.array([[0.0, 2.0], [3.0, 2.0], [1.0, 5.0]])
    >>> indices, values = top_k(acts, 2)
    >>> indices.tolist(), values.tolist()
    ([[1, 2], [2, 0]], [[3.0, 1.0], [5.0, 2.0]])
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(array: Any) -> np.ndarray:
    """A NumPy view of ``array`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def top_k(activations: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the ``k`` images with the highest activation.

    Args:
        activations: [N, M] activations (N images, M neurons).
        k: how many images per neuron; fewer when N < k.

    Returns:
        ``(indices [M, k], values [M, k])``, highest first; ties go to the lower
        image index; NaN ranks last. Values are float32.
    """
    acts = as_numpy(activations)
    if acts.ndim != 2:
        raise ValueError(f"activations must be 2-D [images, neurons], got shape {acts.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    acts = acts.astype(np.float32, copy=False)
    k = min(k, acts.shape[0])
    # A stable sort of the negated values keeps the lower index first among ties.
    order = np.argsort(-acts, axis=0, kind="stable")[:k]
    values = np.take_along_axis(acts, order, axis=0)
    return order.T.astype(np.int64), values.T.copy()
