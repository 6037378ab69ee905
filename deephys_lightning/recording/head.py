"""The linear head a recorded layer feeds: found, copied at each recorded epoch, checked.

The post-hoc detectors ReAct, ASH, SCALE, ViM and fDBD (``head_detectors``) need the
classifier's last linear layer, ``logits = features @ W.T + b``, where ``features``
are the recorded layer's activations. ``DeephysCallback(head="fc")`` names it; without
it every ``torch.nn.Linear`` of the model whose outputs are as wide as the logits is
a candidate. Either way its weights are copied when an epoch is recorded (training
changes them while the record is written), and a candidate counts as a layer's head
only when it reproduces the recorded classifier outputs from that layer's recorded
activations (:func:`head_mismatch`): a layer whose output is not the head's input
(another layer between them, a ReLU the recording adds and the model does not) gets
no head, and the record says why.

Example::

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> sorted(head_candidates(net, None, num_classes=2))
    ['2']
    >>> features = torch.rand(5, 3)
    >>> head = snapshot(head_candidates(net, None, num_classes=2))["2"]
    >>> head_mismatch(features.numpy(), net[2](features).detach().numpy(), head) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.metrics import rows_at, spread_subset
from deephys_lightning.recording.modules import find_module

# How far head(features) may be from the recorded logits, relative to the logits'
# scale: the features are stored in float16 (a relative rounding of 2**-11 each).
RELATIVE_TOLERANCE = 1e-2
# The rows a head is checked on at most: a head that is not the layer's misses on
# nearly every row, and the check stays cheap at ImageNet scale.
CHECKED_ROWS = 4096


def head_candidates(
    model: torch.nn.Module, head: str | None, *, num_classes: int | None
) -> dict[str, torch.nn.Linear]:
    """The linear layers that may be a recorded layer's head, by name: ``head`` when
    named (it must be a ``torch.nn.Linear``), else every ``torch.nn.Linear`` of
    ``model`` with ``num_classes`` outputs (None: any width).

    Raises:
        MisconfigurationException: ``head`` names no module (with the closest names).
        TypeError: ``head`` names a module that is not a ``torch.nn.Linear``.
    """
    if head is not None:
        module = find_module(model, head, "head")
        if not isinstance(module, torch.nn.Linear):
            raise TypeError(
                f"DeephysCallback(head={head!r}) names a {type(module).__name__}; the head "
                "detectors need the torch.nn.Linear that maps the recorded layer to the logits"
            )
        return {head: module}
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (num_classes is None or module.out_features == num_classes)
    }


def snapshot(candidates: Mapping[str, torch.nn.Linear]) -> dict[str, LinearHead]:
    """Each candidate's weights now, as float32 host copies (training goes on)."""
    return {name: LinearHead.from_module(module) for name, module in candidates.items()}


def head_mismatch(
    features: np.ndarray | torch.Tensor, logits: np.ndarray, head: LinearHead
) -> str | None:
    """None when ``head`` maps ``features`` ``[N, M]`` to ``logits`` ``[N, C]`` (or to
    their row maxima, ``[N]``: the ``max_logit`` scores) on the rows where both are
    finite (at most :data:`CHECKED_ROWS` of them, evenly spread), within
    :data:`RELATIVE_TOLERANCE` of the logits' scale; else why not. A tensor of
    features is checked on its device; only the checked rows' logits come back."""
    if not isinstance(features, torch.Tensor):
        features = torch.from_numpy(np.asarray(features, dtype=np.float32))
    logits = np.asarray(logits, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != head.in_features:
        width = features.shape[1] if features.ndim == 2 else "?"
        return f"it takes {head.in_features} inputs, the layer has {width} neurons"
    if logits.ndim == 2 and logits.shape[1] != head.num_classes:
        return f"it has {head.num_classes} outputs, the classifier {logits.shape[1]}"
    rows = torch.isfinite(features).all(dim=1).cpu().numpy()
    rows &= np.isfinite(logits).all(axis=1) if logits.ndim == 2 else np.isfinite(logits)
    kept = np.flatnonzero(rows)
    if not len(kept):
        return "no image has finite activations and classifier outputs to check it on"
    kept = kept[spread_subset(len(kept), CHECKED_ROWS)]
    found = head.logits(rows_at(features, kept)).cpu().numpy()
    if logits.ndim == 1:
        found = found.max(axis=1)
    expected = logits[kept]
    error = float(np.max(np.abs(found - expected)))
    scale = float(np.max(np.abs(expected))) + 1.0
    if error > RELATIVE_TOLERANCE * scale:
        return (
            f"applied to the recorded activations it misses the classifier outputs by up to "
            f"{error:.3g} (their scale: {scale:.3g}): the layer is not its input as recorded "
            "(another layer between them, or a ReLU the recording applies and the model "
            "does not: relu=False)"
        )
    return None
