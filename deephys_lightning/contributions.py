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
  ``l_b - l_a`` over the pair's images;
- :func:`zeroing_effect`: per neuron, how many of a set's predictions change, and the
  set's accuracy, when that neuron alone is zeroed: exact for a linear head, from the
  recorded activations.

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
from deephys_lightning.metrics import device_of, rows_at, spread_subset, top_columns

__all__ = [
    "ImageContributions",
    "ZeroingEffect",
    "image_contributions",
    "pair_contributions",
    "zeroing_effect",
]

_ROW_BLOCK = 2048
_PAIR_COLUMNS = 256  # pair_contributions' neurons per block
# zeroing_effect's images per set at most: an evenly spread subset beyond
ZEROING_MAX_IMAGES = 2_000
# zeroing_effect's (image, neuron) pairs handled at once ([pairs, C] float64 each), its
# images per block, and the (pair, class) comparisons after which it stops (about 2 s
# on a CPU core: a head without margins, untrained, makes every pair reach every class;
# a trained head, few)
_ZEROING_PAIRS = 4096
_ZEROING_BLOCK = 128
_ZEROING_BUDGET = 50_000_000


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


def _tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array)).to(device, dtype)


def _top(values: torch.Tensor, n: int, valid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest of each row, ties to the lower neuron (``metrics.top_columns``);
    rows not ``valid`` get ``-1`` / NaN."""
    n = min(n, values.shape[1])
    values = torch.where(valid[:, None], values, 0.0)
    order = top_columns(values, n)
    picked = values.gather(1, order)
    neurons = torch.where(valid[:, None], order, -1).to(torch.int32)
    found = torch.where(valid[:, None], picked, float("nan"))
    return neurons.cpu().numpy(), found.cpu().numpy().astype(np.float32)


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
    device = device_of(acts)
    weight, bias = head.on(device)  # [C, M], [C]
    labels_t = _tensor(labels, device, torch.int64)
    predicted_t = _tensor(predictions, device, torch.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(labels_t), _ROW_BLOCK):
        a = _rows(acts, start, start + _ROW_BLOCK)
        y = labels_t[start : start + _ROW_BLOCK]
        p = predicted_t[start : start + _ROW_BLOCK]
        valid = (p >= 0) & torch.isfinite(a).all(dim=1)
        # a label beyond the head's classes (class names given for more classes than
        # the classifier outputs) has no logit: no contributions to it, no margin
        known = valid & (y < weight.shape[0])
        y = torch.where(known, y, 0)
        towards_p = a * weight[p.clamp(min=0)]  # [B, M]
        towards_y = a * weight[y]
        margin = (towards_p.double().sum(1) + bias[p.clamp(min=0)].double()) - (
            towards_y.double().sum(1) + bias[y].double()
        )
        margin = torch.where(known, margin, float("nan")).float()
        parts.append((*_top(towards_p, n, valid), *_top(towards_y, n, known), margin.cpu().numpy()))
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
    n = min(n, m)
    count = len(pairs)
    if count == 0:
        return np.zeros((0, n), np.int32), np.zeros((0, n), np.float32)
    num_classes = head.num_classes
    # each image's pair (row of ``pairs``), or -1: not one of them, or left out
    keys = pairs[:, 0] * num_classes + pairs[:, 1]
    order = np.argsort(keys, kind="stable")
    image_keys = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(
        predictions, dtype=np.int64
    )
    slot = np.clip(np.searchsorted(keys[order], image_keys), 0, count - 1)
    row_of = np.where(keys[order][slot] == image_keys, order[slot], -1)
    row_of[np.asarray(predictions) < 0] = -1
    finite = np.concatenate(
        [
            torch.isfinite(_rows(acts, i, i + _ROW_BLOCK)).all(dim=1).cpu().numpy()
            for i in range(0, len(row_of), _ROW_BLOCK)
        ]
        or [np.zeros(0, dtype=bool)]
    )
    row_of[~finite] = -1
    device = device_of(acts)
    member = torch.from_numpy(np.flatnonzero(row_of >= 0))
    into = _tensor(row_of[row_of >= 0], device, torch.int64)
    sizes = torch.bincount(into, minlength=count).double()
    weight = head.on(device)[0].double()
    # a class beyond the head's (a label without a logit) has no margin: no pushes
    within: np.ndarray = np.all(pairs < num_classes, axis=1)
    sizes[_tensor(~within, device, torch.bool)] = 0
    safe = _tensor(np.where(within[:, None], pairs, 0), device, torch.int64)
    gap = weight[safe[:, 1]] - weight[safe[:, 0]]  # [P, M]: W[b] - W[a]
    best_values = torch.full((count, 0), float("nan"), dtype=torch.float64, device=device)
    best_neurons = torch.zeros((count, 0), dtype=torch.int64, device=device)
    # Column blocks, a running top: the [P, M] means of many pairs would not fit.
    for first in range(0, m, _PAIR_COLUMNS):
        columns = slice(first, min(first + _PAIR_COLUMNS, m))
        sums = torch.zeros((count, columns.stop - first), dtype=torch.float64, device=device)
        for start in range(0, len(member), _ROW_BLOCK):
            rows = member[start : start + _ROW_BLOCK]
            if isinstance(acts, torch.Tensor):
                block = acts[rows.to(device), columns].double()
            else:  # only this block's columns of the rows are copied
                block = torch.from_numpy(np.asarray(acts[rows.numpy(), columns])).double()
            sums.index_add_(0, into[start : start + _ROW_BLOCK], block)
        push = sums / sizes[:, None] * gap[:, columns]
        # candidates in neuron order: the running top (lower neurons), then this block's;
        # a stable sort keeps the lower neuron first among ties
        values = torch.cat([best_values, push], dim=1)
        neurons = torch.cat(
            [best_neurons, torch.arange(first, columns.stop, device=device).expand(count, -1)],
            dim=1,
        )
        keep = top_columns(values, min(n, values.shape[1]))
        best_values, best_neurons = values.gather(1, keep), neurons.gather(1, keep)
    valid = sizes > 0
    found = torch.where(valid[:, None], best_neurons, -1).to(torch.int32)
    means = torch.where(valid[:, None], best_values, float("nan")).float()
    return found.cpu().numpy(), means.cpu().numpy()


@dataclasses.dataclass(frozen=True)
class ZeroingEffect:
    """What zeroing each neuron alone does to a set's predictions through the head:
    ``changed`` int32 ``[M]`` how many predictions change, ``accuracy`` float32 ``[M]``
    the set's accuracy then; ``base_accuracy`` the head's accuracy on the recorded
    activations (its predictions, to which ``changed`` compares, can differ from the
    model's on near-ties: the activations are stored in float16), over ``images``
    (those with finite activations; fewer than asked where a head without margins
    makes the comparisons exceed a budget of about 2 s: the first ones, in order)."""

    changed: np.ndarray
    accuracy: np.ndarray
    base_accuracy: float
    images: int


def zeroing_effect(
    acts: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    head: LinearHead,
    *,
    max_images: int | None = None,
) -> ZeroingEffect:
    """:class:`ZeroingEffect` of every neuron of ``acts`` ``[N, M]`` (the head's input,
    rows with a non-finite value left out) with ``labels`` ``[N]``; on an evenly
    spread subset of at most ``max_images`` images (None: all).

    Exact, and cheap for a confident model: zeroing neuron ``j`` moves the gap between
    class ``c`` and the prediction ``p`` by ``a_j (W[p, j] - W[c, j])``, at most
    ``|a_j| R_j`` with ``R_j`` the spread of column ``j`` of ``W``. So only the classes
    within ``max_j |a_j| R_j`` of the top logit can take over; each image's new
    arg-max is computed over those (ties to the lower class, as ``argmax``).

    Example::

        >>> head = LinearHead(np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2))
        >>> found = zeroing_effect(np.array([[2.0, 1.0], [0.5, 1.0]]), np.array([0, 0]), head)
        >>> found.changed.tolist(), found.accuracy.tolist(), found.base_accuracy
        ([1, 1], [0.0, 1.0], 0.5)
    """
    device = device_of(acts)
    if max_images is not None and len(acts) > max_images:
        rows_kept = spread_subset(len(acts), max_images)
        acts, labels = rows_at(acts, rows_kept), np.asarray(labels)[rows_kept]
    weight, bias = (tensor.double() for tensor in head.on(device))  # [C, M], [C]
    spread = weight.max(dim=0).values - weight.min(dim=0).values  # R_j, [M]
    labels_t = _tensor(labels, device, torch.int64)
    m = head.in_features
    changed = torch.zeros(m, dtype=torch.int64, device=device)
    right = torch.zeros(m, dtype=torch.int64, device=device)
    base_right = 0
    images = 0
    spent = 0
    for start in range(0, len(labels_t), _ZEROING_BLOCK):
        if spent >= _ZEROING_BUDGET:  # a head without margins: the images so far
            break
        a = _rows(acts, start, start + _ZEROING_BLOCK).double()
        y = labels_t[start : start + _ZEROING_BLOCK]
        keep = torch.isfinite(a).all(dim=1)
        a, y = a[keep], y[keep]
        if not len(a):
            continue
        logits = a @ weight.T + bias  # [B, C]
        predicted = logits.argmax(dim=1)
        top = logits.gather(1, predicted[:, None])[:, 0]
        was_right = predicted == y
        base_right += int(was_right.sum())
        right += int(was_right.sum())  # every neuron, until a change says otherwise
        images += len(a)
        # Zeroing neuron j moves a class's gap to the top by at most |a_j| R_j: only
        # the (image, neuron) pairs where that reaches the runner-up can change the
        # prediction, and only the classes within that reach can take over.
        shift = a.abs() * spread  # [B, M]
        runner_up = (
            torch.where(
                torch.arange(logits.shape[1], device=device)[None, :] == predicted[:, None],
                -torch.inf,
                logits,
            )
            .max(dim=1)
            .values
        )
        rows, neurons = torch.nonzero(shift >= (top - runner_up)[:, None], as_tuple=True)
        spent += len(rows) * logits.shape[1]
        for chunk in range(0, len(rows), _ZEROING_PAIRS):
            i = rows[chunk : chunk + _ZEROING_PAIRS]
            j = neurons[chunk : chunk + _ZEROING_PAIRS]
            reach = shift[i, j]
            within = (top[i, None] - logits[i]) <= reach[:, None]  # [P, C]
            # the classes within reach, in class order (argmax: ties to the lower class)
            moved = torch.where(within, logits[i] - a[i, j][:, None] * weight[:, j].T, -torch.inf)
            winners = moved.argmax(dim=1)
            changed.index_add_(0, j, (winners != predicted[i]).long())
            right.index_add_(0, j, (winners == y[i]).long() - was_right[i].long())
    if images == 0:
        nan = np.full(m, np.nan, dtype=np.float32)
        return ZeroingEffect(np.zeros(m, dtype=np.int32), nan, float("nan"), 0)
    return ZeroingEffect(
        changed.cpu().numpy().astype(np.int32),
        (right.double() / images).cpu().numpy().astype(np.float32),
        base_right / images,
        images,
    )
