"""Which images have values that are not finite, and why: one status code per image.

A NaN pixel, an exploding layer or an activation beyond float16's range must not turn
a whole set's maxima, means and scores into NaN, nor be counted as a prediction of
class 0. The recorder marks each image per batch, on the recording device (no host
synchronisation): per recorded layer, whether its activations are finite and, if not,
the cause found; and the same for the classifier outputs. The view data then leave
the marked images out (``writing.view_data``) and the record counts them
(``metadata.LeftOut``).

Status codes (uint8): :data:`FINITE` (0), else ``1 +`` the index of the cause in
``metadata.LEFT_OUT_CAUSES``, the most upstream cause found: ``input`` (the image holds
NaN or an infinity), ``activation`` (the layer's output is not finite in the model's
precision), ``float16`` (finite there, beyond float16's range once stored), ``logits``
(the classifier outputs are not finite, the input is).

Example::

    >>> import torch
    >>> acts = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [7e4, 0.0]])
    >>> activation_status(acts, acts.to(torch.float16)).tolist()   # ok, NaN, overflow
    [0, 2, 3]
    >>> x = torch.tensor([[0.5], [float("nan")], [0.5]])
    >>> with_input_cause(activation_status(acts, acts.half()), input_not_finite(x)).tolist()
    [0, 1, 3]
    >>> [CAUSES[code] for code in (1, 2, 3, 4)]
    ['input', 'activation', 'float16', 'logits']
"""

from __future__ import annotations

import numpy as np
import torch

from tensorboard_plugin_deephys.log.metadata import LEFT_OUT_CAUSES, LeftOut

FINITE = 0
# status code -> cause name (code 0, finite, has none)
CAUSES = {index + 1: cause for index, cause in enumerate(LEFT_OUT_CAUSES)}
_CODE = {cause: code for code, cause in CAUSES.items()}
INPUT, ACTIVATION, FLOAT16, LOGITS = (_CODE[c] for c in LEFT_OUT_CAUSES)


def _rows_finite(values: torch.Tensor) -> torch.Tensor:
    """bool ``[B]``: every value of each row is finite (integer rows always are)."""
    if values.numel() == 0 or not (values.is_floating_point() or values.is_complex()):
        return torch.ones(len(values), dtype=torch.bool, device=values.device)
    return torch.isfinite(values.reshape(len(values), -1)).all(dim=1)


def activation_status(model_values: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B]``: :data:`FINITE`, :data:`ACTIVATION` where ``model_values`` (a
    layer's reduced output in the model's precision) has a non-finite value, else
    :data:`FLOAT16` where ``stored`` (the same values as stored) has one."""
    in_model = _rows_finite(model_values)
    once_stored = _rows_finite(stored)
    status = torch.where(once_stored, FINITE, FLOAT16)
    return torch.where(in_model, status, ACTIVATION).to(torch.uint8)


def prediction_status(logits: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B]``: :data:`FINITE`, or :data:`LOGITS` where a row of ``logits`` has a
    non-finite value (such an image has no prediction)."""
    return torch.where(_rows_finite(logits), FINITE, LOGITS).to(torch.uint8)


def input_not_finite(inputs: torch.Tensor) -> torch.Tensor:
    """bool ``[B]``: the images of ``inputs`` ``[B, ...]`` holding NaN or an infinity."""
    return ~_rows_finite(inputs)


def with_input_cause(status: torch.Tensor, bad_inputs: torch.Tensor) -> torch.Tensor:
    """``status`` with the cause of each non-finite row whose input is not finite set to
    :data:`INPUT` (the upstream cause explains the rest)."""
    return torch.where(bad_inputs & (status != FINITE), INPUT, status).to(torch.uint8)


def status_of_values(values: torch.Tensor, *, stored_as_float16: bool) -> np.ndarray:
    """uint8 ``[N]`` statuses of a recording that came without them (built outside the
    callback): the values alone tell ``activation`` from ``float16`` overflow, never
    ``input``. ``stored_as_float16``: the values are widened to float16 as stored.
    Checked on the values' device; the statuses come to the host."""
    rows = values.detach()
    blocks = []
    for start in range(0, len(rows), 4096):
        block = rows[start : start + 4096]
        stored = block.to(torch.float16) if stored_as_float16 else block
        blocks.append(activation_status(block, stored))
    return torch.cat(blocks).cpu().numpy() if blocks else np.zeros(0, dtype=np.uint8)


def left_out(dataset: str, layer: str | None, status: np.ndarray) -> list[LeftOut]:
    """The :class:`LeftOut` rows of one dataset and layer (None: its predictions): a
    row per cause found in ``status``, in :data:`LEFT_OUT_CAUSES` order."""
    counts = np.bincount(np.asarray(status, dtype=np.int64), minlength=len(CAUSES) + 1)
    return [
        LeftOut(dataset=dataset, layer=layer, cause=cause, images=int(counts[code]))
        for code, cause in CAUSES.items()
        if counts[code]
    ]
