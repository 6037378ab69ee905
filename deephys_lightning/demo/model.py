"""The demo's model: the Deephys paper's small CNN for Colored MNIST.

Three hidden layers, two convolutions and ``backbone.fc1`` with 50 neurons (the
penultimate layer the paper studies), then a 10-way linear classifier.

Example::

    >>> import torch
    >>> model = DigitClassifier()
    >>> model(torch.zeros(2, 3, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

PENULTIMATE_LAYER = "backbone.fc1"


class SmallCNN(nn.Module):
    """conv(3→16, 5) → pool → conv(16→32, 5) → pool → fc1(512→50); ReLUs between."""

    def __init__(self, width: int = 50) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.fc1 = nn.Linear(32 * 4 * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))


class DigitClassifier(L.LightningModule):
    """SmallCNN and a linear classifier, trained with cross-entropy and Adam."""

    def __init__(self, num_classes: int = 10, width: int = 50, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = SmallCNN(width)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), add_dataloader_idx=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), add_dataloader_idx=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
