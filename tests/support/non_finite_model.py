"""A model whose recorded layer and classifier outputs are driven, image by image, to
each cause of values that are not finite (``recording.finiteness``), and its data.

Example::

    val = {"clean": loader(driven_set(1, None)), "noisy": loader(driven_set(2, "noisy"))}
    trainer(tmp_path, [DeephysCallback(layer=LAYER)]).fit(DrivenNet(), ..., val)
"""

from __future__ import annotations

import torch
from tiny_model import TinyNet, random_set
from torch import nn
from torch.utils.data import TensorDataset

LAYER = "scaled"
# Which images of each OOD set (of 12) are driven to the case.
DRIVEN = {"noisy": [1, 4, 6, 9], "exploding": [0, 5, 7], "overflow": [2, 3], "no_logits": [8, 10]}


class Scaled(nn.Module):
    """``h / divisor`` per image: the recorded layer (a divisor of 0 gives infinities,
    1e-6 values beyond float16's range, 1 the values themselves)."""

    def forward(self, h: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
        return h / divisor[:, None]


class DrivenNet(TinyNet):
    """TinyNet whose recorded layer is divided by pixel (1, 0, 0) of each image and whose
    logits by pixel (2, 0, 0): 1 for ordinary images."""

    def __init__(self) -> None:
        super().__init__()
        self.scaled = Scaled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(self.features(x).mean(dim=(2, 3)))) + 0.1
        return self.head(self.scaled(h, x[:, 1, 0, 0])) / x[:, 2, 0, 0, None]


def driven_set(seed: int, case: str | None) -> TensorDataset:
    """12 random images; those of DRIVEN[case] driven to the case (None: none)."""
    x, y = random_set(12, seed).tensors
    x[:, 1:, 0, 0] = 1.0
    rows = DRIVEN.get(case, [])
    if case == "noisy":
        x[rows, 0, 4, 4] = float("nan")
    elif case == "exploding":
        x[rows, 1, 0, 0] = 0.0  # h / 0: infinite activations, then logits
    elif case == "overflow":
        x[rows, 1, 0, 0] = 1e-6  # h >= 0.1: 1e5 and more, beyond float16's 65504
    elif case == "no_logits":
        x[rows, 2, 0, 0] = 0.0  # logits / 0
    return TensorDataset(x, y)
