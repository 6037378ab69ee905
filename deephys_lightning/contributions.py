"""What each neuron did to a prediction, where the recorded layer feeds a linear head.

With ``logits = a @ W.T + b`` (``a`` the recorded activations of one image, ``W``
``[C, M]``, ``b`` ``[C]``), neuron ``j``'s contribution to the logit of class ``c`` is
exactly ``a_j * W[c, j]``: the logits are their sums plus the bias. So which neurons
pushed the prediction ``p`` over the true class ``y`` is exact and cheap: their
contributions to the margin ``l_p - l_y`` are ``a_j * (W[p, j] - W[y, j])``.

- :func:`image_contributions`: per image, the ``n`` neurons with the largest
  contributions to its predicted class's logit and to its true class's logit, and
  the margin ``l_p - l_y`` the head gives;
- :func:`pair_contributions`: per confusion pair (images labelled ``a`` predicted
  ``b``), the ``n`` neurons with the largest mean contribution to the margin
  ``l_b - l_a`` over the pair's images.

Everything in torch, float32 products accumulated in float64 where summed, in blocks
of rows. Images without a prediction (``-1``) get no neurons (``-1``, values NaN).

Example::

    >>> import numpy as np
    >>> from deephys_lightning.head_detectors import LinearHead
    >>> head = LinearHead(np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros(2))
    >>> acts = np.array([[3.0, 1.0], [1.0, 1.0]])       # logits [3, 2] and [1, 2]
    >>> found = image_contributions(acts, np.array([1, 0]), np.array([0, 1]), head, n=2)
    >>> found.predicted_neurons.tolist(), found.predicted_values.tolist()
    ([[0, 1], [1, 0]], [[3.0, 0.0], [2.0, 0.0]])
    >>> found.margins.tolist()                           # l_p - l_y
    [1.0, 1.0]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from deephys_lightning.head_detectors import LinearHead

__all__ = ["ImageContributions", "image_contributions", "pair_contributions"]

_ROW_BLOCK = 2048


@dataclasses.dataclass(frozen=True)
class ImageContributions:
    """Per image (``[N, n]``, most first; ``-1`` / NaN where none): the neurons with the
    largest contributions ``a_j W[p, j]`` to the predicted class's logit and their
    values, the same for the true class, and ``margins`` ``[N]`` float32, the logit
    of the prediction minus that of the label (0 when right, NaN without a
    prediction)."""

    predicted_neurons: np.ndarray
    predicted_values: np.ndarray
    label_neurons: np.ndarray
    label_values: np.ndarray
    margins: np.ndarray


def _rows(acts: np.ndarray | torch.Tensor, start: int, stop: int) -> torch.Tensor:
    block = acts[start:stop]
    block = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.asarray(block))
    return block.float()


def _top(values: torch.Tensor, n: int, valid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest of each row, ties to the lower neuron; rows not ``valid``
    get ``-1`` / NaN."""
    n = min(n, values.shape[1])
    # a stable descending sort puts ties in neuron order
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :n]
    picked = values.gather(1, order)
    neurons = torch.where(valid[:, None], order, -1).to(torch.int32)
    found = torch.where(valid[:, None], picked, float("nan"))
    return neurons.numpy(), found.numpy().astype(np.float32)


def image_contributions(
    acts: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    predictions: np.ndarray,
    head: LinearHead,
    *,
    n: int = 16,
) -> ImageContributions:
    """:class:`ImageContributions` of every image of ``acts`` ``[N, M]`` (the head's
    input), with its ``labels`` and ``predictions`` ``[N]`` (``-1``: no prediction)."""
    weight = torch.from_numpy(head.weight)  # [C, M]
    bias = torch.from_numpy(head.bias)
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    predicted_t = torch.from_numpy(np.asarray(predictions, dtype=np.int64))
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(labels_t), _ROW_BLOCK):
        a = _rows(acts, start, start + _ROW_BLOCK)
        y = labels_t[start : start + _ROW_BLOCK]
        p = predicted_t[start : start + _ROW_BLOCK]
        valid = (p >= 0) & torch.isfinite(a).all(dim=1)
        towards_p = a * weight[p.clamp(min=0)]  # [B, M]
        towards_y = a * weight[y]
        margin = (towards_p.double().sum(1) + bias[p.clamp(min=0)].double()) - (
            towards_y.double().sum(1) + bias[y].double()
        )
        margin = torch.where(valid, margin, float("nan")).float()
        parts.append((*_top(towards_p, n, valid), *_top(towards_y, n, valid), margin.numpy()))
    if not parts:
        empty_i, empty_f = np.zeros((0, n), np.int32), np.zeros((0, n), np.float32)
        return ImageContributions(empty_i, empty_f, empty_i, empty_f, np.zeros(0, np.float32))
    stacked = [np.concatenate([part[i] for part in parts]) for i in range(5)]
    return ImageContributions(*stacked)


def pair_contributions(
    acts: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    predictions: np.ndarray,
    pairs: np.ndarray,
    head: LinearHead,
    *,
    n: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair ``(a, b)`` of ``pairs`` ``[P, 2]`` (label ``a`` predicted ``b``), the
    ``n`` neurons with the largest mean contribution ``a_j (W[b, j] - W[a, j])`` to the
    margin of ``b`` over ``a`` over the pair's images, and those means: int32 and
    float32 ``[P, n]`` (a pair without images: ``-1`` / NaN; on the diagonal, ``a ==
    b``, every contribution is 0)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = head.in_features
    count = len(pairs)
    if count == 0:
        return np.zeros((0, min(n, m)), np.int32), np.zeros((0, min(n, m)), np.float32)
    num_classes = head.num_classes
    key = torch.from_numpy(pairs[:, 0] * num_classes + pairs[:, 1])
    image_key = torch.from_numpy(
        np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    )
    predicted = torch.from_numpy(np.asarray(predictions) >= 0)
    sums = torch.zeros((count, m), dtype=torch.float64)
    sizes = torch.zeros(count, dtype=torch.float64)
    for start in range(0, len(image_key), _ROW_BLOCK):
        a = _rows(acts, start, start + _ROW_BLOCK)
        keys = image_key[start : start + _ROW_BLOCK]
        slot = torch.searchsorted(torch.sort(key).values, keys)
        order = torch.argsort(key)
        slot = slot.clamp(max=count - 1)
        found = (torch.sort(key).values[slot] == keys) & predicted[start : start + _ROW_BLOCK]
        found &= torch.isfinite(a).all(dim=1)
        rows = order[slot[found]]
        sums.index_add_(0, rows, a[found].double())
        sizes.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))
    means = sums / sizes[:, None]  # NaN for a pair without images
    weight = torch.from_numpy(head.weight).double()
    push = means * (weight[pairs[:, 1]] - weight[pairs[:, 0]])  # [P, M]
    valid = sizes > 0
    neurons, values = _top(push.float(), n, valid)
    return neurons, values
