"""Read event files past damaged records, and say where the damage is.

TensorBoard's Python loader stops reading an event file at its first record whose
CRC fails: one flipped byte hides every later step, intact ones included. The
project's own readers (``read_log``, ``deephys-lightning scores`` and ``export``)
load through :class:`CheckedEventMultiplexer` instead. It checks each record's
framing (TFRecord: length, masked CRC-32C of the length, data, masked CRC-32C of
the data) and, where a record is damaged, notes a :class:`Damage` (file, byte
offset, cause) and goes on:

- the data of a record fail their CRC, its length is intact: that one record is
  skipped;
- its length fails its CRC: the reader looks for the next offset where a record
  with valid CRCs starts (a record of an event starts with its wall time, so only
  offsets followed by that field's tag byte are tried) and goes on from there;
- the file ends inside a record (truncated, or still being written): reading
  stops there.

Every intact record reached is kept, so a run with one damaged record loses that
record only. The ``Damage`` list is per run; ``read_log(...).damage`` shows it.

Example::

    multiplexer = CheckedEventMultiplexer(size_guidance={"tensors": 0})
    multiplexer.AddRunsFromDirectory("lightning_logs")
    multiplexer.Reload()
    for damage in multiplexer.damage.get("version_0", []):
        print(damage)   # lightning_logs/version_0/events...: data CRC mismatch at byte 4096 ...
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
from collections.abc import Iterator
from typing import IO

from google.protobuf import message
from tensorboard.backend.event_processing import (
    directory_watcher,
    event_file_loader,
    io_wrapper,
    plugin_event_accumulator,
    plugin_event_multiplexer,
)
from tensorboard.compat.proto import event_pb2

from deephys_lightning.fast_crc import masked_crc32c
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.metadata import Kind, Record, tag_name

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data
_WALL_TIME_TAG = 0x09  # field 1 (Event.wall_time), wire type 1 (64-bit): a record's first byte
_SCAN_WINDOW = 1 << 20
# A length beyond this is not a record's (the largest the callback writes is 8 MiB).
_MAX_RECORD = 1 << 31


@dataclasses.dataclass(frozen=True)
class Damage:
    """A damaged stretch of one event file: ``skipped`` bytes from byte ``offset``."""

    path: str
    offset: int
    skipped: int
    cause: str
    at_end: bool = False  # the file ends inside a record (truncated, or being written)

    def __str__(self) -> str:
        if self.at_end:
            return (
                f"{self.path}: {self.cause} at byte {self.offset} (its last {self.skipped} "
                "bytes are an incomplete record; every record before them is kept)"
            )
        return (
            f"{self.path}: {self.cause} at byte {self.offset} "
            f"({self.skipped} bytes skipped; every intact record around them is kept)"
        )


class RecordScanner:
    """The intact records of one event file, as bytes, in file order.

    Damaged records are skipped and appended to ``damage`` (see the module's rules).
    Iterating again after the end reads what was appended to the file since.
    """

    def __init__(self, path: str, damage: list[Damage], only_with: bytes | None = None) -> None:
        self.path = path
        self._damage = damage
        # Yield only records whose first bytes hold this (e.g. a tag): the others are
        # skipped unread, so a scan for a few small records stays light.
        self._only_with = only_with
        self._offset = 0
        self._handle: IO[bytes] | None = None
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        handle = self._handle
        if handle is None:  # kept open across records; its size seen at opening
            handle = self._handle = storage.open_read(self.path)
            self._size = _handle_size(handle)
        size = self._size
        while True:
            record, next_offset = self._read_at(handle, self._offset, size)
            if next_offset is None:  # the end, or a record not complete yet
                handle.close()
                self._handle = None
                raise StopIteration
            self._offset = next_offset
            if record is not None:
                return record

    def _read_at(self, handle, offset: int, size: int) -> tuple[bytes | None, int | None]:
        """(record, offset after it), (None, offset to go on from) after damage or a
        record skipped unread, or (None, None) at the end of the file."""
        if offset >= size:
            return None, None
        handle.seek(offset)
        header = handle.read(_HEADER)
        if len(header) < _HEADER:
            return self._truncated(offset, size)
        length = _valid_length(header)
        if length is None:
            found = self._next_record_start(handle, offset + 1, size)
            end = size if found is None else found
            self._note(offset, end - offset, "length CRC mismatch (a damaged record header)")
            return None, found
        if offset + _HEADER + length + _FOOTER > size:
            return self._truncated(offset, size)
        end = offset + _HEADER + length + _FOOTER
        if self._only_with is not None and self._only_with not in handle.read(min(length, 512)):
            return None, end
        handle.seek(offset + _HEADER)
        data = _checked_data(handle, length)
        if data is None:
            self._note(offset, end - offset, "data CRC mismatch (a damaged record)")
        return data, end

    def _truncated(self, offset: int, size: int) -> tuple[None, None]:
        # Left unread: a writer may still complete it. Noted, so that a reader of a
        # finished log learns it ends early.
        cause = "the file ends inside a record (still being written, or truncated)"
        self._note(offset, size - offset, cause, at_end=True)
        return None, None

    def _next_record_start(self, handle, start: int, size: int) -> int | None:
        """The first offset at or after ``start`` where a record with valid CRCs begins."""
        position = start
        while position + _HEADER < size:
            handle.seek(position)
            window = handle.read(_SCAN_WINDOW + _HEADER + 1)
            candidate = window.find(bytes([_WALL_TIME_TAG]), _HEADER)
            while candidate != -1:
                begin = position + candidate - _HEADER
                if self._is_record(handle, begin, size):
                    return begin
                candidate = window.find(bytes([_WALL_TIME_TAG]), candidate + 1)
            position += _SCAN_WINDOW
        return None

    @staticmethod
    def _is_record(handle, offset: int, size: int) -> bool:
        handle.seek(offset)
        header = handle.read(_HEADER)
        length = _valid_length(header) if len(header) == _HEADER else None
        if length is None or offset + _HEADER + length + _FOOTER > size:
            return False
        return _checked_data(handle, length) is not None

    def _note(self, offset: int, skipped: int, cause: str, at_end: bool = False) -> None:
        # Once per place: a reload reads a damaged stretch that has no record after it
        # (or an incomplete last record) again, as more may have been written since.
        if not any(d.path == self.path and d.offset == offset for d in self._damage):
            self._damage.append(Damage(self.path, offset, skipped, cause, at_end))


def _valid_length(header: bytes) -> int | None:
    """The data length a record's 12-byte header holds, or None when it fails its CRC."""
    (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
    if masked_crc32c(header[:8]) != length_crc or length > _MAX_RECORD:
        return None
    return length


def _handle_size(handle) -> int:
    """The size of the file behind ``handle`` as opened (a remote file's, fixed at
    opening; a local one's, now): what the scanner reads up to this time."""
    size = getattr(handle, "size", None)  # fsspec's files
    return int(size) if size is not None else os.fstat(handle.fileno()).st_size


def _checked_data(handle, length: int) -> bytes | None:
    """The ``length`` data bytes at the handle and the CRC after them: the data, or None
    when they fail it (or the file ends before them)."""
    data = handle.read(length)
    footer = handle.read(_FOOTER)
    if len(data) != length or len(footer) != _FOOTER:
        return None
    (data_crc,) = struct.unpack("<I", footer)
    return data if masked_crc32c(data) == data_crc else None


class CheckedEventFileLoader(event_file_loader.EventFileLoader):
    """TensorBoard's event file loader (with its compat layers) reading through a
    :class:`RecordScanner`, so damaged records are skipped instead of ending the file."""

    def __init__(self, path: str, damage: list[Damage]) -> None:
        super().__init__(path)
        self._iterator = RecordScanner(path, damage)


class CheckedEventAccumulator(plugin_event_accumulator.EventAccumulator):
    """An accumulator whose event files are read by :class:`CheckedEventFileLoader`."""

    def __init__(self, path: str, damage: list[Damage], **kwargs) -> None:
        super().__init__(path, **kwargs)
        self._generator = directory_watcher.DirectoryWatcher(
            path,
            lambda file_path: CheckedEventFileLoader(file_path, damage),
            io_wrapper.IsSummaryEventsFile,
        )


class CheckedEventMultiplexer(plugin_event_multiplexer.EventMultiplexer):
    """TensorBoard's event multiplexer, reading past damaged records.

    ``damage`` maps each run to the damaged stretches found in its event files.
    """

    def __init__(self, size_guidance: dict | None = None) -> None:
        self.damage: dict[str, list[Damage]] = {}
        self._damage_lock = threading.Lock()
        super().__init__(size_guidance=size_guidance)

    def AddRun(self, path: str, name: str | None = None):  # noqa: N802 (TensorBoard's name)
        name = name or path
        with self._accumulators_mutex:
            if name in self._accumulators:
                return self
            with self._damage_lock:
                damage = self.damage.setdefault(name, [])
            self._accumulators[name] = CheckedEventAccumulator(
                path,
                damage,
                size_guidance=self._size_guidance,
                tensor_size_guidance=self._tensor_size_guidance,
                purge_orphaned_data=self.purge_orphaned_data,
            )
            self._paths[name] = path
        if self._reload_called:
            self._accumulators[name].Reload()
        return self


def recorded_steps(run_dir: str) -> dict[int, str]:
    """The steps that hold a Deephys record in the event files of ``run_dir`` itself
    (not its subdirectories, which are runs of their own), with the stage of each
    ("" for records that name none).

    A light scan: only the record events are read and parsed; every other record's
    framing is checked and its bytes are skipped (about 4 µs per record: 2 s for a
    log of 500,000 scalar events). Damaged records are skipped too.
    """
    marker = tag_name(Kind.RECORD).encode()
    steps: dict[int, str] = {}
    try:
        names = sorted(storage.listdir(run_dir))
    except OSError:
        return steps
    for name in names:
        path = storage.join(run_dir, name)
        if not io_wrapper.IsSummaryEventsFile(path) or storage.isdir(path):
            continue
        try:
            for raw in RecordScanner(path, [], only_with=marker):
                try:
                    event = event_pb2.Event.FromString(raw)
                except message.DecodeError:  # intact framing, damaged content: skip it
                    continue
                for value in event.summary.value:
                    if value.tag == marker.decode() and value.tensor.string_val:
                        record = Record.from_json(b"".join(value.tensor.string_val))
                        if record is not None:
                            steps[record.step] = record.stage
        except OSError:  # unreadable from here on: the steps found so far
            continue
    return steps
