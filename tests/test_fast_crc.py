"""The fast CRC-32C writes exactly the bytes TensorBoard's own does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
from tensorboard.summary.writer import record_writer

from deephys_lightning import fast_crc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_masked_crc32c_matches_tensorboards(data):
    assert fast_crc.masked_crc32c(data) == reference(data)


def test_install_switches_the_record_writer(monkeypatch):
    monkeypatch.setattr(record_writer, "masked_crc32c", reference)
    monkeypatch.setenv("DEEPHYS_PURE_PYTHON_CRC", "1")
    assert fast_crc.install() is False
    assert record_writer.masked_crc32c is reference
    monkeypatch.delenv("DEEPHYS_PURE_PYTHON_CRC")
    assert fast_crc.install() is True
    assert record_writer.masked_crc32c is fast_crc.masked_crc32c
