"""What the maps of the top images (``DeephysCallback(spatial_maps=True)``) cost.

    python benchmarks/bench_spatial_maps.py [--images 256] [--repeats 2] [--layers net.layer4]

``trainer.validate`` of a torchvision ResNet18 (random weights) on an InD and an OOD
set of random 224 px images, recording conv layers (``net.layer4``: 512 x 7 x 7, kept
as they are; ``net.layer3``: 256 x 14 x 14, pooled to 7 x 7), side by side in one
run, interleaved (in turn first): with ``spatial_maps=True`` and ``False``. Prints each one's median
time, the overhead, and the event file sizes (the log-size growth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deephys_lightning import DeephysCallback


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self(batch[0])


def _loader(n: int, seed: int, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 224, 224, generator=generator)
    y = torch.randint(0, 1000, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _validate(model, loaders, layers, maps: bool, root: str) -> tuple[float, int]:
    logger = TensorBoardLogger(root, name="run")
    callback = DeephysCallback(layers=layers, spatial_maps=maps, strict=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.validate(model, dataloaders=loaders, verbose=False)
    seconds = time.perf_counter() - start
    # the events and the step packs beside them (plugins/deephys/steps/), where the maps go
    return seconds, sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(logger.log_dir)
        for name in names
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256, help="per set")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", nargs="+", default=["net.layer4"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = Classifier(torchvision.models.resnet18()).eval()
    loaders = {
        "ind": _loader(args.images, 1, args.batch_size),
        "ood": _loader(args.images, 2, args.batch_size),
    }
    times: dict[bool, list[float]] = {True: [], False: []}
    sizes: dict[bool, int] = {}
    with tempfile.TemporaryDirectory() as root:
        _validate(model, loaders, args.layers, True, root)  # warm-up
        for repeat in range(args.repeats):
            for maps in (False, True) if repeat % 2 == 0 else (True, False):  # fair order
                seconds, size = _validate(model, loaders, args.layers, maps, root)
                times[maps].append(seconds)
                sizes[maps] = size
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"ResNet18, {args.layers}, 2 x {args.images} images of 224 px, batch {args.batch_size}")
    print(f"spatial_maps=False: {off:.2f} s  {times[False]}")
    print(f"spatial_maps=True:  {on:.2f} s  {times[True]}")
    print(f"overhead: {on - off:+.2f} s ({on / off:.3f}x)")
    mib = 1024**2
    print(
        f"log (events and step packs): {sizes[False] / mib:.2f} MiB -> {sizes[True] / mib:.2f} MiB "
        f"(+{(sizes[True] - sizes[False]) / mib:.2f} MiB)"
    )


if __name__ == "__main__":
    main()
