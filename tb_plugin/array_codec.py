"""Arrays as byte chunks: the ``.npy`` format split into pieces of bounded size.

Blob sequences in Deephys events hold one ``.npy`` stream (dtype and shape in its
header) cut into chunks no larger than ``metadata.MAX_CHUNK_BYTES``. NumPy only.

Example::

    >>> import numpy as np
    >>> a = np.arange(6, dtype=np.float16).reshape(2, 3)
    >>> bool((decode_chunks(encode_chunks(a, chunk_bytes=16)) == a).all())
    True
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from tb_plugin.metadata import MAX_CHUNK_BYTES


def encode_chunks(array: np.ndarray, chunk_bytes: int = MAX_CHUNK_BYTES) -> list[bytes]:
    """Serialise ``array`` as ``.npy`` bytes and split them into chunks."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getbuffer()
    return [bytes(data[i : i + chunk_bytes]) for i in range(0, len(data), chunk_bytes)]


def decode_chunks(chunks: Sequence[bytes]) -> np.ndarray:
    """Join chunks written by :func:`encode_chunks` and load the array."""
    return np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False)
