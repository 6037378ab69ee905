"""Where records go: the logger's run directory, a new version, an evaluation's run.

Example::

    log_dir = logger_dir(trainer) or new_version_dir("lightning_logs")
    held_elsewhere = evaluation_dir(log_dir, "validate", 120)   # .../validate_step120
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from tensorboard_plugin_deephys.log import storage


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The trainer's first TensorBoardLogger, if any."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def logger_dir(trainer: pl.Trainer) -> str | None:
    """The run directory of the TensorBoardLogger, else of the first logger that has one
    (``CSVLogger.log_dir``); None without such a logger."""
    logger = tensorboard_logger(trainer)
    if logger is not None:
        return storage.normalize(logger.log_dir)
    for other in trainer.loggers:
        try:
            log_dir = getattr(other, "log_dir", None)
        except Exception:  # a logger whose directory is not known yet
            log_dir = None
        if isinstance(log_dir, str | os.PathLike) and os.fspath(log_dir):
            return storage.normalize(log_dir)
    return None


def evaluation_dir(log_dir: str, stage: str, step: int) -> str:
    """A new run directory under ``log_dir`` for an evaluation at a step it already has:
    ``<stage>_step<step>``, or with ``_2``, ``_3``, ... when that is taken."""
    base = storage.join(log_dir, f"{stage}_step{step}")
    return claim_new_dir(itertools.chain([base], (f"{base}_{n}" for n in itertools.count(2))))


def new_version_dir(root: str) -> str:
    """A new ``version_N`` under ``root`` (N one more than the highest there), as
    Lightning's loggers number theirs: where records go without a logger directory."""
    try:
        names = storage.listdir(root)
    except FileNotFoundError:
        names = []
    taken = [int(n[len("version_") :]) for n in names if re.fullmatch(r"version_\d+", n)]
    first = max(taken, default=-1) + 1
    return claim_new_dir(storage.join(root, f"version_{n}") for n in itertools.count(first))


def claim_new_dir(candidates: Iterable[str]) -> str:
    """The first of ``candidates`` no one uses. A local folder is claimed by making it
    (two jobs never pick the same one); on an object store, where folders are only
    prefixes, the first name without objects is taken."""
    for path in candidates:
        if storage.is_url(path):
            if not storage.exists(path):
                return path
            continue
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the candidates are endless")
