"""Time the demo, and a validation epoch with and without DeephysCallback.

    python benchmarks/demo_time.py [--repeats 5]

Prints the demo's wall time (3 epochs, default sizes, logging included) and the
median time of ``trainer.validate`` on the four Colored-digits sets (4 x 1,000
images) of the demo CNN: plain, and with the callback (capture + writing), side by
side in the same run, with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning as L
from torch.utils.data import DataLoader

from deephys_lightning import DeephysCallback
from deephys_lightning.demo.cli import train_demo
from deephys_lightning.demo.data import CLASS_NAMES, make_colored_digits
from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier


def _validate_seconds(model, loaders, callbacks, logdir) -> float:
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(logdir),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.validate(model, dataloaders=loaders, verbose=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        train_demo(logdir, epochs=3, quiet=True)
        demo_seconds = time.perf_counter() - start
    print(f"demo training (3 epochs, 5,000 train + 4 x 1,000 val images): {demo_seconds:.1f} s")

    data = make_colored_digits(500, 100, seed=0)
    loaders = {name: DataLoader(ds, batch_size=256) for name, ds in data.val.items()}
    model = DigitClassifier()
    plain, first, later = [], [], []
    with tempfile.TemporaryDirectory() as logdir:
        _validate_seconds(model, loaders, [], logdir)  # warm-up
        for _ in range(args.repeats):  # interleaved, so drift hits every side alike
            plain.append(_validate_seconds(model, loaders, [], logdir))
            # a new callback writes thumbnails; the same callback again does not
            callback = DeephysCallback(layer=PENULTIMATE_LAYER, class_names=CLASS_NAMES)
            first.append(_validate_seconds(model, loaders, [callback], logdir))
            later.append(_validate_seconds(model, loaders, [callback], logdir))
    p = statistics.median(plain)
    print(f"validation epoch (4 x 1,000 images), median of {args.repeats}:")
    print(f"  without callback                        {p * 1000:8.1f} ms")
    for label, times in (
        ("with DeephysCallback, first record", first),
        ("with DeephysCallback, later records", later),
    ):
        t = statistics.median(times)
        print(f"  {label:38s}  {t * 1000:8.1f} ms   ratio {t / p:.2f}x")


if __name__ == "__main__":
    main()
