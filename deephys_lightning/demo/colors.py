"""The Deephys authors' Colored-MNIST colours and colouring recipe.

Numbers from their tutorial (mjgroth/deephys-aio, ``tutorials/Colored_MNIST_Tutorial.ipynb``,
cell "6. Generate colors for MNIST InD and OOD versions"): four colour tables, one row
(RGB in [0, 1]) per digit class, chosen by ``opt_c``:

- 1: the in-distribution (InD) colours;
- 2: the same ten colours, given to other digits (a derangement: no class keeps its own);
- 3: ten arbitrary new colours;
- 4: table 1 minus 0.2726747 in every channel, clamped at 0 when the image is made.

A digit is coloured by its class: its grayscale image (MNIST-normalised) is binarized
at ``x * 255 > 150``, every foreground pixel gets the class's colour, the background
stays black.

Example::

    >>> import torch
    >>> gray = torch.tensor([[[0.0, 0.5]]])         # one 1x2 "image", raw pixels / 255
    >>> colorize(binarize(gray), torch.tensor([0]), IND_COLORS)[0, :, 0, 1]
    tensor([0.1371, 1.0000, 0.7122])
"""

from __future__ import annotations

import numpy as np
import torch

# MNIST's normalisation (torchvision's usual ``Normalize((0.1307,), (0.3081,))``), which
# the tutorial applies before binarizing.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Foreground: normalised pixel * 255 > 150, i.e. raw pixel (0..255) > 79.54.
BINARIZE_THRESHOLD = 150.0

# opt_c = 1: the InD colours, one row per digit 0..9.
IND_COLORS = np.array(
    [
        [0.13710051, 1.0, 0.71222024],
        [1.0, 0.23502843, 0.21756662],
        [1.0, 0.38958, 0.08445272],
        [0.3963379, 0.59521337, 1.0],
        [0.65700309, 0.70908503, 1.0],
        [1.0, 0.09696472, 0.50587124],
        [0.51142274, 0.91275694, 1.0],
        [1.0, 0.6304754, 0.09344255],
        [1.0, 0.80362454, 0.51662567],
        [0.40087705, 0.79163833, 1.0],
    ],
    dtype=np.float32,
)
# opt_c = 2: digit c gets the InD colour of digit PERMUTATION[c].
PERMUTATION = np.array([2, 5, 3, 0, 9, 8, 7, 4, 6, 1])
# opt_c = 3: the arbitrary colours.
ARBITRARY_COLORS = np.array(
    [
        [1.0, 0.41949873, 0.99060461],
        [0.45823549, 1.0, 0.35099324],
        [0.18897236, 1.0, 0.0655438],
        [0.61364824, 0.52432431, 1.0],
        [0.20415346, 1.0, 0.7115653],
        [0.18451955, 0.76054322, 1.0],
        [0.67399901, 1.0, 0.17729946],
        [0.58266085, 1.0, 0.16336576],
        [1.0, 0.7173036, 0.8670752],
        [0.86803908, 0.98159648, 1.0],
    ],
    dtype=np.float32,
)
# opt_c = 4: the InD colours minus this value (negative channels end up 0).
DRIFT_OFFSET = 0.2726747

OOD_PALETTES = {
    "permuted": IND_COLORS[PERMUTATION],
    "arbitrary": ARBITRARY_COLORS,
    "drifted": np.clip(IND_COLORS - np.float32(DRIFT_OFFSET), 0.0, 1.0),
}


def binarize(gray: torch.Tensor) -> torch.Tensor:
    """The tutorial's foreground mask of digits in [0, 1] (raw pixel / 255): 1.0 or 0.0.

    The pixel is MNIST-normalised, then kept where ``x * 255 > 150``.
    """
    normalised = (gray.float() - MNIST_MEAN) / MNIST_STD
    return (normalised * 255 > BINARIZE_THRESHOLD).float()


def colorize(gray: torch.Tensor, labels: torch.Tensor, palette: np.ndarray) -> torch.Tensor:
    """Colour digits ``(N, 28, 28)`` in [0, 1] by class: ``(N, 3, 28, 28)``.

    Each pixel is its gray value times the class's colour, the colour clamped to
    [0, 1] (the tutorial clamps the product, the same for masks of 0 and 1). Pass
    :func:`binarize` masks for the authors' images.
    """
    colors = torch.as_tensor(palette, dtype=torch.float32).clamp(0.0, 1.0)[labels]
    return gray.unsqueeze(1) * colors[:, :, None, None]
