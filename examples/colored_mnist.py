"""Colored MNIST with Deephys: does the tool find what the paper found?

The Deephys paper's first experiment (section 4.1.1, Fig. 3): every digit class gets
its own colour in the training and in-distribution (InD) set, so colour is a
shortcut the model learns; three OOD sets keep the digits and change the colours:

- ``permuted``: the same ten colours given to other digits;
- ``arbitrary``: ten new colours;
- ``drifted``: the InD colours plus one small constant shift.

A 3-layer CNN (two convolutions, a 50-neuron penultimate layer ``backbone.fc1``, a
linear classifier) is trained with ``DeephysCallback`` recording ``backbone.fc1`` at
every validation epoch. At the end the script prints the score table of the last
epoch and checks the paper's pattern on it:

- permuted: low novelty (its colours are all known) and a high spurious score (the
  colour neurons now fire for other digits);
- arbitrary: high novelty (colour neurons fire less for new colours) and a medium
  spurious score;
- drifted: both small.

The digits are real MNIST when ``--data-dir`` holds torchvision's copy
(``DIR/MNIST/raw/*-ubyte``), else the generated digits of the demo; nothing is
downloaded. The exit status is 0 when the pattern holds, 1 when it does not.

Example::

    python examples/colored_mnist.py                       # ~1 minute on a CPU
    python examples/colored_mnist.py --data-dir ~/data     # real MNIST
    tensorboard --logdir lightning_logs                    # then the "Deephys" tab

See docs/examples/colored_mnist.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from deephys_lightning import DeephysCallback
from deephys_lightning.demo.data import CLASS_NAMES, make_colored_digits
from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier
from deephys_lightning.scores import ScoreRow, format_table, score_table

PROG = "examples/colored_mnist.py"
EXPERIMENT_NAME = "colored_mnist"


def train(
    logdir: str | os.PathLike,
    *,
    epochs: int = 3,
    train_per_class: int = 500,
    val_per_class: int = 100,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> str:
    """Train the CNN on Colored MNIST with DeephysCallback; returns the run's log dir."""
    L.seed_everything(seed, verbose=False)
    data = make_colored_digits(train_per_class, val_per_class, data_dir=data_dir, seed=seed)
    logger = TensorBoardLogger(os.fspath(logdir), name=EXPERIMENT_NAME)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger,
        # The first validation set is the InD one; the others are OOD sets.
        callbacks=[DeephysCallback(layer=PENULTIMATE_LAYER, class_names=CLASS_NAMES)],
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=10,
    )
    trainer.fit(
        DigitClassifier(num_classes=len(CLASS_NAMES)),
        DataLoader(data.train, batch_size=64, shuffle=True),
        val_dataloaders={name: DataLoader(s, batch_size=256) for name, s in data.val.items()},
    )
    return logger.log_dir


@dataclasses.dataclass(frozen=True)
class Expectation:
    """One comparison of the paper's pattern, and whether the scores meet it."""

    claim: str
    holds: bool


def check_pattern(rows: Sequence[ScoreRow]) -> list[Expectation]:
    """The paper's ordering of mean novelty and spurious scores over the three OOD sets.

    ``rows`` are the score rows of one step and layer (one per OOD set).
    """
    by_set = {row.ood: row for row in rows}
    missing = {"permuted", "arbitrary", "drifted"} - set(by_set)
    if missing:
        raise ValueError(f"no scores for the OOD sets {sorted(missing)}")
    novelty = {name: by_set[name].novelty_mean for name in by_set}
    spurious = {name: by_set[name].spurious_mean for name in by_set}
    return [
        Expectation(
            "novelty: arbitrary > permuted (new colours vs known ones)",
            novelty["arbitrary"] > novelty["permuted"],
        ),
        Expectation(
            "novelty: arbitrary > drifted (drifted is small)",
            novelty["arbitrary"] > novelty["drifted"],
        ),
        Expectation(
            "spurious: permuted > arbitrary (high vs medium)",
            spurious["permuted"] > spurious["arbitrary"],
        ),
        Expectation(
            "spurious: arbitrary > drifted (medium vs small)",
            spurious["arbitrary"] > spurious["drifted"],
        ),
    ]


def last_step_rows(run_dir: str) -> list[ScoreRow]:
    """The score rows of the last recorded step of the run in ``run_dir``."""
    run = os.path.join(EXPERIMENT_NAME, os.path.basename(os.path.normpath(run_dir)))
    rows = [dataclasses.replace(row, run=run) for row in score_table(run_dir)]
    last = max(row.step for row in rows)
    return [row for row in rows if row.step == last]


def _parser() -> argparse.ArgumentParser:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    parser.add_argument("--data-dir", help="folder with torchvision's MNIST (MNIST/raw/)")
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=_positive, default=3)
    parser.add_argument("--train-per-class", type=_positive, default=500)
    parser.add_argument("--val-per-class", type=_positive, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run_dir = train(
            args.logdir,
            epochs=args.epochs,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            data_dir=args.data_dir,
            seed=args.seed,
            quiet=args.quiet,
        )
    except FileNotFoundError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    rows = last_step_rows(run_dir)
    print(format_table(rows))
    expectations = check_pattern(rows)
    for expectation in expectations:
        print(f"{'ok  ' if expectation.holds else 'FAIL'}  {expectation.claim}")
    print(f"view it with: tensorboard --logdir {args.logdir}")
    if all(e.holds for e in expectations):
        print("The paper's pattern holds.")
        return 0
    print("The paper's pattern does not hold on this run (try more epochs or images).")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
