"""Natural shifts from MNIST, offline: other writers' digits and Fashion-MNIST.

- :func:`sklearn_digits_28`: scikit-learn's 1,797 real 8x8 digits (other writers,
  values 0..16), made to look like MNIST: each resampled to a 20 px box centred in a
  28 px frame, intensity scaled to [0, 1].
- :func:`fashion_mnist`: Fashion-MNIST's 28 px garments from an idx folder, by default
  Debian's ``dataset-fashion-mnist`` package (:data:`FASHION_MNIST_DIR`).

Example::

    >>> images, labels = sklearn_digits_28()
    >>> images.shape, float(images.max())
    (torch.Size([1797, 28, 28]), 1.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deephys_lightning.demo.mnist import read_idx_folder

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_BOX, _FRAME = 20, 28


def sklearn_digits_28() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as MNIST-like ``(1797, 28, 28)`` images in [0, 1], and labels.

    Raises:
        ModuleNotFoundError: scikit-learn is not installed (the fix is in the message).
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the other writers' digits come with scikit-learn: pip install scikit-learn"
        ) from None
    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    box = F.interpolate(small, size=(_BOX, _BOX), mode="bilinear", align_corners=False)
    pad = (_FRAME - _BOX) // 2
    frame = F.pad(box, (pad, pad, pad, pad)).squeeze(1).clamp(0.0, 1.0)
    return frame, torch.from_numpy(digits.target.astype(np.int64))


def fashion_mnist(
    folder: str | os.PathLike = FASHION_MNIST_DIR, per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's test images ``(N, 28, 28)`` in [0, 1] and labels (``FASHION_CLASSES``).

    ``per_class`` keeps the first that many of each class (in file order); ``None`` all.

    Raises:
        FileNotFoundError: ``folder`` lacks the idx files (the fix is in the message).
    """
    try:
        images, labels = read_idx_folder(folder, train=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"no Fashion-MNIST in {os.fspath(folder)} ({error}): install Debian's copy with "
            f"`apt-get install dataset-fashion-mnist` (it fills {FASHION_MNIST_DIR}), or "
            "pass --fashion-dir with the four *-ubyte.gz files"
        ) from None
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    return torch.from_numpy(images).float() / 255.0, torch.from_numpy(labels)
