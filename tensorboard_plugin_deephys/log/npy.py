"""``.npy`` arrays read safely from several threads at once.

NumPy reads an ``.npy`` header with ``ast.literal_eval``. On CPython 3.11, two
threads compiling at once can make it fail with ``SystemError: AST constructor
recursion depth mismatch`` (python/cpython#106905): the AST's recursion counter is
shared by the interpreter's threads. The readers here run on several threads
(TensorBoard's server, export's datasets, the pack openers), so the header written
by ``numpy.save`` (``{'descr': '<f4', 'fortran_order': False, 'shape': (12, 3), }``)
is read here with a regular expression; any other header (a structured dtype) goes
to NumPy's parser, one thread at a time.

Example::

    >>> import io
    >>> buffer = io.BytesIO()
    >>> np.save(buffer, np.arange(6, dtype=np.float16).reshape(2, 3))
    >>> loads(bytearray(buffer.getvalue())).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
from typing import IO

import numpy as np

# numpy.save's own layout of the header dict, as its format module writes it.
_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[^']+)', 'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>(?:\d+, ?)*\d*)\), \}[ ]*\n?"
)
_MAX_HEADER = 10_000  # bytes, as numpy.load allows by default
_PARSER = threading.Lock()  # NumPy's parser (ast) for the other headers


def read_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` data whose start ``handle``
    is at; ``handle`` is left at the first byte of the array.

    Raises:
        ValueError: not ``.npy`` data, a header too long or malformed, or an object
            dtype (which only a pickle could hold).
    """
    start = handle.tell()
    major, _ = np.lib.format.read_magic(handle)
    size_format = "<H" if major == 1 else "<I"
    size_bytes = handle.read(struct.calcsize(size_format))
    if len(size_bytes) != struct.calcsize(size_format):
        raise ValueError("the .npy header ended early")
    (length,) = struct.unpack(size_format, size_bytes)
    if length > _MAX_HEADER:
        raise ValueError(f"a .npy header of {length} bytes (at most {_MAX_HEADER})")
    raw = handle.read(length)
    if len(raw) != length:
        raise ValueError("the .npy header ended early")
    text = raw.decode("utf-8" if major >= 3 else "latin1")
    found = _HEADER.fullmatch(text)
    if found is None:
        handle.seek(start)
        return _numpy_header(handle)
    shape = tuple(int(size) for size in re.findall(r"\d+", found["shape"]))
    dtype = np.dtype(found["descr"])
    if dtype.hasobject:
        raise ValueError("the .npy data hold Python objects (a pickle): refused")
    return shape, found["fortran"] == "True", dtype


def _numpy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    with _PARSER:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    if dtype.hasobject:
        raise ValueError("the .npy data hold Python objects (a pickle): refused")
    return shape, fortran, dtype


def loads(data: bytes | bytearray) -> np.ndarray:
    """The array of ``.npy`` bytes, what ``numpy.load(allow_pickle=False)`` gives:
    a view of ``data``, writable when ``data`` is a ``bytearray``.

    Raises:
        ValueError: not ``.npy`` data, a malformed header, an object dtype, or data
            that end before the array does.
    """
    handle = io.BytesIO(data)
    shape, fortran, dtype = read_header(handle)
    offset, count = handle.tell(), math.prod(shape)
    if dtype.itemsize == 0 or count == 0:
        return np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(
            f"the .npy data end early: {len(data) - offset} bytes for "
            f"{count * dtype.itemsize} of {dtype} {list(shape)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")
