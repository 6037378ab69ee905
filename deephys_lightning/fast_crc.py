"""A fast CRC-32C for TensorBoard's event file writer and reader.

TensorBoard frames every event record with a masked CRC-32C, computed in pure
Python when TensorFlow is absent (about 11 MB/s here): writing the thumbnails of a
validation set took longer than validating it, and reading a log back
(``read_log``, export) spent nine tenths of its time checking records.
:func:`install` makes TensorBoard's record writer and its Python record reader, in
this process, use ``google-crc32c`` (hardware-accelerated C) instead. The bytes
written and the checks made are identical: ``install`` checks the two
implementations agree before it switches, and does nothing when
``DEEPHYS_PURE_PYTHON_CRC=1`` is set.

Example::

    >>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as slow
    >>> masked_crc32c(b"deephys") == slow(b"deephys")
    True
"""

from __future__ import annotations

import os

import google_crc32c

_MASK = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as TFRecord framing defines it."""
    crc = google_crc32c.value(bytes(data))
    return ((((crc >> 15) | (crc << 17)) & _MASK) + _MASK_DELTA) & _MASK


def install() -> bool:
    """Use :func:`masked_crc32c` in TensorBoard's record writer and reader.

    Returns True when both use it.
    """
    if os.environ.get("DEEPHYS_PURE_PYTHON_CRC") == "1":
        return False
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # the record reader
    from tensorboard.summary.writer import record_writer

    return all([_switch(record_writer), _switch(pywrap_tensorflow)])


def _switch(module) -> bool:
    current = getattr(module, "masked_crc32c", None)
    if current is None:
        return False
    if current is masked_crc32c:
        return True
    samples = (b"", b"deephys", bytes(range(256)) * 5)
    if any(current(sample) != masked_crc32c(sample) for sample in samples):
        return False
    module.masked_crc32c = masked_crc32c
    return True
