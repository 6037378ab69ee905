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


def text(value: str) -> bytes:
    """A UTF-8 text string."""
    encoded = value.encode("utf-8")
    return head(TEXT, len(encoded)) + encoded
