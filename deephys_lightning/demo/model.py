"""The demo's model: the Deephys authors' small CNN for Colored MNIST.

As in their tutorial (mjgroth/deephys-aio, ``tutorials/Colored_MNIST_Tutorial.ipynb``,
cell "2. Define neural net model"): two 5x5 convolutions (10 and 20 channels, max
pooling, dropout on the second), ``backbone.fc1`` with 50 neurons (the penultimate
layer the paper studies, dropout after it while training), then a 10-way linear
classifier. ``in_channels=1`` makes the grayscale variant of the writer-shift example.

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
    """conv(C→10, 5) → pool → conv(10→20, 5) → dropout → pool → fc1(320→50); ReLUs."""

    def __init__(self, width: int = 50, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * 4 * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return F.dropout(x, training=self.training)


class DigitClassifier(L.LightningModule):
    """SmallCNN and a linear classifier, trained with cross-entropy and Adam."""

    def __init__(
        self, num_classes: int = 10, width: int = 50, lr: float = 2e-3, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = SmallCNN(width, in_channels)
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
