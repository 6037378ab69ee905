"""``.npy`` data read without NumPy's parser (``log/npy.py``): the arrays
``numpy.load`` gives, from any thread, at once."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tensorboard_plugin_deephys.log import npy

ARRAYS = [
    np.arange(6, dtype=np.float16).reshape(2, 3),
    np.array(3.5, dtype=np.float64),  # 0-d
    np.zeros((0, 4), dtype=np.int32),  # empty
    np.arange(5, dtype=">u4"),  # big-endian
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    np.array(["ind", "ood/ångström"]),  # unicode
    np.array([(1, 2.5)], dtype=[("a", "<i4"), ("b", "<f8")]),  # structured: NumPy's parser
    np.ones((2, 3, 4, 5), dtype=np.bool_),
]


def _saved(array: np.ndarray, version=None) -> bytes:
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array, allow_pickle=False)
    else:
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_the_arrays_are_numpys(array, version):
    data = _saved(array, version)
    expected = np.load(io.BytesIO(data), allow_pickle=False)
    found = npy.loads(bytearray(data))
    assert found.dtype == expected.dtype and found.shape == expected.shape
    assert found.flags.f_contiguous == expected.flags.f_contiguous
    np.testing.assert_array_equal(found, expected)
    if found.size:
        assert found.flags.writeable  # from a bytearray
    handle = io.BytesIO(data)
    assert npy.read_header(handle) == (expected.shape, expected.flags.fnc, expected.dtype)
    assert handle.tell() == len(data) - expected.nbytes


def test_bad_data_are_value_errors_that_say_why():
    good = _saved(np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError, match="end early"):
        npy.loads(good[:-3])
    with pytest.raises(ValueError):
        npy.loads(b"not an npy file at all")
    with pytest.raises(ValueError, match="ended early"):
        npy.loads(good[:9])
    with pytest.raises(ValueError, match="objects"):
        npy.loads(_saved_objects())
    long_header = b"\x93NUMPY\x02\x00" + (20_000).to_bytes(4, "little") + b" " * 20_000
    with pytest.raises(ValueError, match="at most"):
        npy.loads(long_header)


def _saved_objects() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_many_threads_read_at_once():
    # NumPy's own header parser (ast) fails now and then on CPython 3.11 when threads
    # compile at once (python/cpython#106905); these readers run on several threads.
    saved = [_saved(array) for array in ARRAYS] * 50
    expected = [np.load(io.BytesIO(data), allow_pickle=False) for data in saved]
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda data: npy.loads(bytearray(data)), saved))
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_array_equal(got, want)
