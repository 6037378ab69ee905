"""The fast CRC-32C writes exactly the bytes TensorBoard's own does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
from tensorboard.summary.writer import record_writer
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from deephys_lightning import fast_crc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_masked_crc32c_matches_tensorboards(data):
    assert fast_crc.masked_crc32c(data) == reference(data)


def test_install_switches_the_record_writer_and_reader(monkeypatch):
    monkeypatch.setattr(record_writer, "masked_crc32c", reference)
    monkeypatch.setattr(pywrap_tensorflow, "masked_crc32c", reference)
    monkeypatch.setenv("DEEPHYS_PURE_PYTHON_CRC", "1")
    assert fast_crc.install() is False
    assert record_writer.masked_crc32c is reference
    assert pywrap_tensorflow.masked_crc32c is reference
    monkeypatch.delenv("DEEPHYS_PURE_PYTHON_CRC")
    assert fast_crc.install() is True
    assert record_writer.masked_crc32c is fast_crc.masked_crc32c
    assert pywrap_tensorflow.masked_crc32c is fast_crc.masked_crc32c


def test_the_fast_reader_still_rejects_a_corrupted_record(tmp_path, monkeypatch):
    monkeypatch.setattr(record_writer, "masked_crc32c", reference)
    monkeypatch.setattr(pywrap_tensorflow, "masked_crc32c", reference)
    assert fast_crc.install() is True
    writer = EventFileWriter(str(tmp_path))
    writer.add_event(event_pb2.Event(step=1, file_version="brain.Event:2"))
    writer.close()
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # a byte of the last event's payload
    path.write_bytes(bytes(data))
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    reader.GetNext()  # the file_version event the writer starts with
    with pytest.raises(Exception, match="crc32"):
        reader.GetNext()
