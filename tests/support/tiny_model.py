"""A tiny LightningModule and data for callback tests."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

NUM_CLASSES = 3


class TinyNet(L.LightningModule):
    """conv (B, 4, 6, 6) -> pool -> fc (B, 5) -> head (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh())
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(h)))

    def training_step(self, batch, batch_idx):
        x, y = _xy(batch)
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = _xy(batch)
        self(x)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = _xy(batch)
        self(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class CountingNet(TinyNet):
    """TinyNet that counts its training steps: an error must come before the first."""

    def __init__(self) -> None:
        super().__init__()
        self.trained = 0

    def training_step(self, batch, batch_idx):
        self.trained += 1
        return super().training_step(batch, batch_idx)


def _xy(batch):
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


def random_set(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return TensorDataset(x, y)


class DictSet(Dataset):
    """The same data as a TensorDataset, as dict samples."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"image": x, "label": y}


def loader(dataset, batch_size: int = 4) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    kwargs.setdefault("logger", TensorBoardLogger(str(tmp_path), name="tiny"))
    kwargs.setdefault("max_epochs", 2)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("accelerator", "cpu")
    return L.Trainer(
        devices=1,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=3,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


def module_output(model: nn.Module, module: nn.Module, x: torch.Tensor):
    """What ``module`` outputs when ``model`` (in eval mode) runs on ``x``, by hand,
    and the model's own output: ``(module_output, model_output)``."""
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    model.eval()
    with torch.no_grad():
        out = model(x)
    handle.remove()
    return seen[0], out
