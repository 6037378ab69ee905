"""Colored digits: the Colored-MNIST data of the Deephys paper (section 4.1.1).

Every digit class gets its own colour in the in-distribution (InD) set. The three
out-of-distribution (OOD) sets keep the digits and change only the colours:

- ``permuted``: the same ten colours, assigned to the classes by a derangement;
- ``arbitrary``: ten new colours (each class's InD colour moved far, at random);
- ``drifted``: the InD colours plus one constant shift.

Digits come from real MNIST when torchvision's copy is in ``data_dir``
(``<data_dir>/MNIST/raw/*-ubyte``); otherwise they are generated: glyphs drawn with
Pillow's built-in font, then randomly rotated, scaled, sheared and shifted. Nothing
is downloaded.

Example::

    >>> sets = make_colored_digits(train_per_class=20, val_per_class=5, seed=0)
    >>> sets.train.tensors[0].shape, sorted(sets.val)
    (torch.Size([200, 3, 28, 28]), ['arbitrary', 'colored', 'drifted', 'permuted'])
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import TensorDataset

CLASS_NAMES = [str(d) for d in range(10)]
IMAGE_SIZE = 28

# Ten well-separated InD colours, one per digit (RGB in [0, 1]).
IND_COLORS = np.array(
    [
        [0.90, 0.10, 0.10],  # 0 red
        [0.10, 0.75, 0.15],  # 1 green
        [0.15, 0.30, 0.95],  # 2 blue
        [0.95, 0.85, 0.10],  # 3 yellow
        [0.85, 0.15, 0.85],  # 4 magenta
        [0.10, 0.85, 0.85],  # 5 cyan
        [0.95, 0.50, 0.05],  # 6 orange
        [0.55, 0.25, 0.85],  # 7 violet
        [0.55, 0.80, 0.30],  # 8 lime
        [0.95, 0.60, 0.70],  # 9 pink
    ],
    dtype=np.float32,
)
# A derangement: no class keeps its colour.
PERMUTATION = np.array([3, 7, 5, 9, 0, 8, 1, 4, 2, 6])
# New colours, one per class: the class's InD colour moved by a random offset of up to
# ±0.45 per channel (numpy seed 0), redrawn until at least 0.2 away from every InD
# colour. None of them is an InD colour (colour neurons fire less: high novelty), but
# each keeps part of its class's old channel values, and the first layer is linear in
# them, so neurons keep part of their preference among classes: a medium spurious
# score, between the permuted and the drifted sets, as in the paper.
ARBITRARY_COLORS = np.array(
    [
        [0.46, 0.38, 0.47],
        [0.20, 0.96, 0.19],
        [0.54, 0.58, 0.50],
        [1.00, 0.43, 0.31],
        [0.56, 0.48, 0.89],
        [0.05, 0.78, 0.43],
        [1.00, 0.40, 0.50],
        [0.98, 0.42, 0.99],
        [0.72, 0.70, 0.05],
        [0.94, 0.95, 1.00],
    ],
    dtype=np.float32,
)
DRIFT = np.array([0.10, -0.08, 0.08], dtype=np.float32)

OOD_PALETTES = {
    "permuted": IND_COLORS[PERMUTATION],
    "arbitrary": ARBITRARY_COLORS,
    "drifted": np.clip(IND_COLORS + DRIFT, 0.0, 1.0),
}


@dataclasses.dataclass
class ColoredDigits:
    """A training set and the validation sets: ``val`` maps names to datasets, InD first."""

    train: TensorDataset
    val: dict[str, TensorDataset]
    source: str  # "mnist" or "generated"


def colorize(gray: torch.Tensor, labels: torch.Tensor, palette: np.ndarray) -> torch.Tensor:
    """Colour grayscale digits ``(N, 28, 28)`` in [0, 1] by class: ``(N, 3, 28, 28)``."""
    colors = torch.as_tensor(palette, dtype=torch.float32)[labels]  # (N, 3)
    return gray.unsqueeze(1) * colors[:, :, None, None]


def make_colored_digits(
    train_per_class: int = 500,
    val_per_class: int = 100,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> ColoredDigits:
    """Build the InD training set and the InD + three OOD validation sets.

    Args:
        train_per_class: training images per digit.
        val_per_class: images per digit in each validation set.
        data_dir: folder holding torchvision's MNIST (``MNIST/raw``); ``None`` to
            generate digits instead.
        seed: makes the generated digits and the sampling reproducible.

    Raises:
        FileNotFoundError: ``data_dir`` is given but holds no MNIST copy.
    """
    generator = torch.Generator().manual_seed(seed)
    if data_dir is not None:
        train_gray, train_y = _mnist_digits(data_dir, True, train_per_class, generator)
        val_gray, val_y = _mnist_digits(data_dir, False, val_per_class, generator)
        source = "mnist"
    else:
        train_gray, train_y = generate_digits(train_per_class, generator)
        val_gray, val_y = generate_digits(val_per_class, generator)
        source = "generated"
    train = TensorDataset(colorize(train_gray, train_y, IND_COLORS), train_y)
    val = {"colored": TensorDataset(colorize(val_gray, val_y, IND_COLORS), val_y)}
    for name, palette in OOD_PALETTES.items():
        val[name] = TensorDataset(colorize(val_gray, val_y, palette), val_y)
    return ColoredDigits(train=train, val=val, source=source)


def _glyph_bank() -> torch.Tensor:
    """Digit glyphs ``(10, V, 40, 40)`` in a few sizes and stroke widths."""
    variants = []
    for size in (20, 24, 28):
        font = ImageFont.load_default(size=size)
        for stroke in (0, 1, 2):
            variants.append((font, stroke))
    bank = np.zeros((10, len(variants), 40, 40), dtype=np.float32)
    for digit in range(10):
        for v, (font, stroke) in enumerate(variants):
            canvas = Image.new("L", (40, 40), 0)
            draw = ImageDraw.Draw(canvas)
            draw.text(
                (20, 20),
                str(digit),
                fill=255,
                font=font,
                anchor="mm",
                stroke_width=stroke,
                stroke_fill=255,
            )
            bank[digit, v] = np.asarray(canvas, dtype=np.float32) / 255.0
    return torch.from_numpy(bank)


def generate_digits(
    per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Handwriting-like digits ``(10 * per_class, 28, 28)`` in [0, 1] and their labels.

    Labels are shuffled. Each image is a glyph under a random affine transform
    (rotation ±15°, scale 0.8-1.1, shear ±0.25, shift ±3 px), then resampled to 28 px.
    """
    bank = _glyph_bank()
    n = 10 * per_class
    labels = torch.arange(10).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=generator)]
    variant = torch.randint(0, bank.shape[1], (n,), generator=generator)
    glyphs = bank[labels, variant].unsqueeze(1)  # (n, 1, 40, 40)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.8, 1.1)
    shear = uniform(-0.25, 0.25)
    shift = uniform(-3, 3), uniform(-3, 3)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, 0, 2], theta[:, 1, 2] = shift[0] / 20, shift[1] / 20
    grid = F.affine_grid(theta, [n, 1, 40, 40], align_corners=False)
    warped = F.grid_sample(glyphs, grid, align_corners=False, padding_mode="zeros")
    # Crop the 40 px canvas to the central 34 px and resample to 28 px, like MNIST's
    # 20 px digit in a 28 px frame.
    small = F.interpolate(
        warped[:, :, 3:37, 3:37],
        size=(IMAGE_SIZE, IMAGE_SIZE),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return small.squeeze(1).clamp(0, 1), labels


def _mnist_digits(
    data_dir: str | os.PathLike, train: bool, per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    raw = os.path.join(os.fspath(data_dir), "MNIST", "raw")
    if not os.path.isdir(raw):
        raise FileNotFoundError(
            f"--data-dir {os.fspath(data_dir)!r} holds no MNIST copy: expected torchvision's "
            f"layout {raw}/train-images-idx3-ubyte (and the other three files). Leave out "
            "--data-dir to use the generated digits."
        )
    try:
        mnist = MNIST(os.fspath(data_dir), train=train, download=False)
    except RuntimeError as error:
        raise FileNotFoundError(f"could not read MNIST from {raw}: {error}") from None
    images, targets = mnist.data, mnist.targets
    picked = []
    for digit in range(10):
        where = torch.nonzero(targets == digit).flatten()
        order = torch.randperm(len(where), generator=generator)[:per_class]
        picked.append(where[order])
    index = torch.cat(picked)
    index = index[torch.randperm(len(index), generator=generator)]
    return images[index].float() / 255.0, targets[index].long()
