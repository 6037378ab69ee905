"""The few CBOR (RFC 8949) items the Deephys file format is made of.

Definite lengths and the shortest head, as ``cbor2`` writes them by default, so the
bytes are the same as those of the ``deephys`` package. Bulk data (pixel rows,
activation vectors) are byte strings whose heads :func:`head` builds and whose
payloads the exporter copies in with NumPy.

Example::

    >>> text("name")
    b'dname'
    >>> head(MAP, 2) + text("a") + uint(1000) + text("b") + NULL
    b'\\xa2aa\\x19\\x03\\xe8ab\\xf6'
"""

from __future__ import annotations

import numpy as np

UINT = 0
BYTES = 2
TEXT = 3
ARRAY = 4
MAP = 5
NULL = b"\xf6"


def head(major: int, length: int) -> bytes:
    """The head of an item of ``major`` type with argument ``length``, shortest form."""
    if length < 0:
        raise ValueError(f"CBOR lengths and unsigned integers are >= 0, got {length}")
    first = major << 5
    if length < 24:
        return bytes([first | length])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([first | extra]) + length.to_bytes(size, "big")
    raise ValueError(f"{length} does not fit in a CBOR head")


def uint(value: int) -> bytes:
    """An unsigned integer."""
    return head(UINT, int(value))


def uints(start: int, stop: int) -> list[bytes]:
    """``[uint(i) for i in range(start, stop)]``, made in bulk: the values that share a
    head size are laid out together by NumPy (about twice as fast for image indices).

    Example::

        >>> uints(22, 26)
        [b'\\x16', b'\\x17', b'\\x18\\x18', b'\\x18\\x19']
    """
    if start < 0:
        raise ValueError(f"CBOR lengths and unsigned integers are >= 0, got {start}")
    if stop > 1 << 64:
        raise ValueError(f"{stop - 1} does not fit in a CBOR head")
    found: list[bytes] = [uint(i) for i in range(start, min(stop, 24))]
    # (the head's low bits, the bytes that follow, the first value that needs them)
    for extra, size, first in ((24, 1, 24), (25, 2, 1 << 8), (26, 4, 1 << 16), (27, 8, 1 << 32)):
        low, high = max(start, first), min(stop, 1 << (8 * size))
        if low >= high:
            continue
        heads = np.empty((high - low, 1 + size), np.uint8)
        heads[:, 0] = (UINT << 5) | extra
        values = np.arange(low, high, dtype=np.uint64).astype(f">u{size}")
        heads[:, 1:] = values.view(np.uint8).reshape(-1, size)
        laid = heads.tobytes()
        width = 1 + size
        found += [laid[i : i + width] for i in range(0, len(laid), width)]
    return found


def text(value: str) -> bytes:
    """A UTF-8 text string."""
    encoded = value.encode("utf-8")
    return head(TEXT, len(encoded)) + encoded
