"""One recorded step's arrays in one file beside the events: the step pack.

TensorBoard keeps what the event files hold in memory (and the Python loader reads
every byte of them through a pure-Python CRC), so since 0.3 the events of a record
hold only its document, scalars and histograms; every array of the step is in one
pack under the run's asset folder, read by ranged reads::

    <run>/plugins/deephys/steps/<step, 12 digits>-<16 hex>.safetensors

The file is in the safetensors layout (https://huggingface.co/docs/safetensors),
so any safetensors reader opens it (``safetensors.numpy.load_file``)::

    8 bytes   little-endian uint64 H: the length of the JSON header
    H bytes   {"__metadata__": {"deephys": DOC},
               TAG: {"dtype": "F16", "shape": [N, M], "data_offsets": [begin, end]}, ...}
              (spaces pad it to a multiple of 8 bytes)
    the rest  the arrays, C order, little-endian, back to back, smallest first

``TAG`` is the array's tag (``metadata.tag_name``), offsets count from the end of
the header. ``DOC`` is a JSON text: ``{"format": 1, "step": S, "written": UNIX time,
"record": RECORD, "documents": {TAG: JSON text}, "crc32c": {TAG: CRC-32C}}``: the
record (whose ``pack`` is this file's name), the step's JSON documents (thumbnail
references, detection rows) and the CRC-32C of each array's bytes.

Opening reads the head once (one ranged read of :data:`HEAD_BYTES`, which holds the
header and the small arrays that come first: maxima, scores, fire fractions); each
other array is one ranged read, checked against its CRC-32C. A pack is written under
a temporary name and renamed (on object stores: an upload committed when complete),
so a step is in the log whole or not at all. Why this layout: docs/data_format.md.

Example::

    tag = tag_name(Kind.LABELS, dataset="ind")
    written = write_pack(run_dir, record, {tag: labels}, {})
    pack = StepPack.open(run_dir, written.pack)
    pack.record.step, pack.array(tag)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any

import google_crc32c
import numpy as np

from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.json_documents import Fields, MalformedDocument, parse_json
from tensorboard_plugin_deephys.log.metadata import ASSET_ROOT, Record

PACK_DIR = "steps"
PACK_SUFFIX = ".safetensors"
FORMAT = 1
# One read at opening takes the header and the small arrays after it.
HEAD_BYTES = 256 * 1024
# A header longer than this is damage (names are bounded: see metadata.py).
MAX_HEADER_BYTES = 64 * 1024 * 1024
_NAME = re.compile(r"steps/(\d{12})-([0-9a-f]{16})\.safetensors")
_METADATA_KEY = "deephys"
# safetensors' dtype names of the dtypes Deephys arrays hold.
_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_CRC_PIECE = 16 * 1024 * 1024
_NAMES_OF_DTYPES = {dtype: name for name, dtype in _DTYPES.items()}


class PackError(ValueError):
    """A step pack that cannot be read as written: truncated, damaged, or not the pack
    its name and the record say. The message names the file, the step and the cause."""


def pack_name(step: int) -> str:
    """A new pack's asset name for ``step``: the step, then a random part (a step
    written again, after a resume, gets a file of its own)."""
    return f"{PACK_DIR}/{int(step):012d}-{uuid.uuid4().hex[:16]}{PACK_SUFFIX}"


def pack_step(relative: str) -> int | None:
    """The step in a pack's asset name; None for a name that is not a pack's."""
    found = _NAME.fullmatch(relative) if isinstance(relative, str) else None
    return int(found.group(1)) if found else None


def pack_path(run_dir: str, relative: str) -> str:
    """The file of a pack name read from a record, refusing any other name (the log
    is data: it must not steer file access)."""
    if pack_step(relative) is None:
        raise ValueError(f"not a Deephys step pack name: {relative!r}")
    return storage.join(run_dir, *ASSET_ROOT.split("/"), *relative.split("/"))


def list_packs(run_dir: str) -> list[str]:
    """The pack names of a run, oldest step first (temporary files and anything else
    in the folder left out); ``[]`` for a run without packs."""
    folder = storage.join(run_dir, *ASSET_ROOT.split("/"), PACK_DIR)
    try:
        names = storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    relative = (f"{PACK_DIR}/{name}" for name in names)
    return sorted(name for name in relative if pack_step(name) is not None)


# -- writing ---------------------------------------------------------------------


def write_pack(
    run_dir: str,
    record: Record,
    arrays: Mapping[str, np.ndarray],
    documents: Mapping[str, bytes],
) -> Record:
    """Write one step's ``arrays`` (by tag) and JSON ``documents`` (by tag) with
    ``record`` as a new pack under ``run_dir``, complete or absent; return the record
    as the pack holds it (its ``pack`` names the file, its ``arrays`` every tag)."""
    relative = pack_name(record.step)
    tags = sorted({*arrays, *documents})
    written = dataclasses.replace(record, pack=relative, arrays=tuple(tags))
    ordered = sorted(
        ((tag, _little_endian(array)) for tag, array in arrays.items()),
        key=lambda item: (item[1].nbytes, item[0]),
    )
    header = _header(written, ordered, documents)

    def write(handle: IO[bytes]) -> None:
        handle.write(header)
        for _, array in ordered:
            if array.nbytes:
                handle.write(_bytes_of(array))

    storage.write_stream(pack_path(run_dir, relative), write)
    return written


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype not in _NAMES_OF_DTYPES:
        raise TypeError(f"a step pack holds no {array.dtype} arrays")
    return np.ascontiguousarray(array, dtype=dtype)


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    flat: Any = array.reshape(-1).view(np.uint8)
    return memoryview(flat).toreadonly()


def _crc32c(data: memoryview | bytes) -> int:
    """The CRC-32C of ``data`` (google_crc32c takes only bytes: 16 MiB at a time)."""
    if isinstance(data, bytes):
        return google_crc32c.value(data)
    crc = 0
    for start in range(0, len(data), _CRC_PIECE):
        crc = google_crc32c.extend(crc, data[start : start + _CRC_PIECE].tobytes())
    return crc


def _header(
    record: Record, ordered: list[tuple[str, np.ndarray]], documents: Mapping[str, bytes]
) -> bytes:
    entries: dict[str, Any] = {}
    offset = 0
    for tag, array in ordered:
        entries[tag] = {
            "dtype": _NAMES_OF_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    doc = {
        "format": FORMAT,
        "step": record.step,
        "written": time.time(),
        "record": json.loads(record.to_json()),
        "documents": {tag: bytes(raw).decode("utf-8") for tag, raw in sorted(documents.items())},
        "crc32c": {tag: _crc32c(_bytes_of(a)) for tag, a in ordered},
    }
    text = json.dumps({"__metadata__": {_METADATA_KEY: json.dumps(doc)}, **entries})
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


# -- reading ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # in the file
    end: int
    crc32c: int


class StepPack:
    """One opened pack: its record, documents and arrays (read on demand).

    ``nbytes`` is what it keeps in memory (the head), for a bounded cache.
    """

    def __init__(
        self,
        path: str,
        relative: str,
        record: Record,
        entries: dict[str, _Entry],
        documents: dict[str, bytes],
        written: float,
        head: bytes,
    ) -> None:
        self.path = path
        self.relative = relative
        self.record = record
        self.documents = documents
        self.written = written
        self._entries = entries
        self._head = head
        self.names = frozenset(entries)  # the tags of the arrays it holds

    @classmethod
    def open(cls, run_dir: str, relative: str) -> StepPack:
        """Read the head of the pack ``relative`` of ``run_dir`` and check it against
        its name. ``FileNotFoundError`` when it is absent, :class:`PackError` when it
        is not a readable pack of that step."""
        path = pack_path(run_dir, relative)
        step = pack_step(relative)
        head = storage.read_range(path, 0, HEAD_BYTES)
        what = f"the step pack {relative} (step {step})"
        if len(head) < 8:
            raise PackError(f"{what} is truncated: {len(head)} bytes, no header")
        (length,) = struct.unpack("<Q", head[:8])
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise PackError(f"{what} is damaged: its header length {length} is out of range")
        if len(head) < 8 + length:
            if len(head) < HEAD_BYTES:
                raise PackError(f"{what} is truncated within its header")
            head += storage.read_range(path, len(head), 8 + length - len(head))
            if len(head) < 8 + length:
                raise PackError(f"{what} is truncated within its header")
        try:
            entries, doc = _parse_header(head[8 : 8 + length], 8 + length)
            documents, record, written = _parse_doc(doc)
        except MalformedDocument as error:
            raise PackError(f"{what} is damaged: {error}") from None
        if record.step != step or record.pack != relative:
            raise PackError(
                f"{what} holds the record of another pack (step {record.step}, "
                f"{record.pack or 'no pack'}): it was put in place of this one"
            )
        return cls(path, relative, record, entries, documents, written, bytes(head))

    @property
    def nbytes(self) -> int:
        return len(self._head) + 200 * len(self._entries)

    def shape(self, tag: str) -> tuple[int, ...] | None:
        """The shape of the array ``tag`` as the header gives it; None when absent."""
        entry = self._entries.get(tag)
        return None if entry is None else entry.shape

    def array(self, tag: str) -> np.ndarray:
        """The array ``tag``, checked against its CRC-32C (``KeyError`` when the pack
        holds none, :class:`PackError` when its bytes are not those written)."""
        entry = self._entries[tag]
        size = entry.end - entry.begin
        if entry.end <= len(self._head):
            data = self._head[entry.begin : entry.end]
        else:
            data = storage.read_range(self.path, entry.begin, size)
        what = f"the step pack {self.relative} (step {self.record.step})"
        if len(data) != size:
            raise PackError(f"{what} is truncated: {tag} ends at byte {entry.end}")
        if _crc32c(data) != entry.crc32c:
            raise PackError(f"{what} is damaged: the bytes of {tag} fail their CRC-32C")
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)


def _parse_header(raw: bytes, data_start: int) -> tuple[dict[str, _Entry], Mapping[str, Any]]:
    header = parse_json(raw.rstrip(b" "), "its header", max_bytes=MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise MalformedDocument("its header", "it is not a JSON object")
    meta = Fields(header.pop("__metadata__", None) or {}, "its __metadata__")
    doc = Fields(parse_json(meta.text(_METADATA_KEY), "its deephys metadata"), "its metadata")
    crcs = doc.data.get("crc32c") if isinstance(doc.data, dict) else None
    if not isinstance(crcs, dict):
        raise MalformedDocument("its metadata", "it has no crc32c table")
    entries: dict[str, _Entry] = {}
    end_of_data = 0
    for tag, spec in sorted(header.items(), key=lambda item: _begin(item[1])):
        fields = Fields(spec, f"its entry {tag!r}")
        dtype = _DTYPES.get(fields.text("dtype"))
        if dtype is None:
            raise MalformedDocument(f"its entry {tag!r}", "its dtype is not one Deephys writes")
        shape = fields.counts("shape")
        offsets = fields.counts("data_offsets")
        size = math.prod(shape) * dtype.itemsize
        if len(offsets) != 2 or offsets[0] != end_of_data or offsets[1] - offsets[0] != size:
            raise MalformedDocument(f"its entry {tag!r}", "its offsets do not fit its shape")
        begin, end = offsets
        crc = crcs.get(tag)
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 2**32:
            raise MalformedDocument("its crc32c table", f"it has no CRC-32C of {tag!r}")
        entries[tag] = _Entry(dtype, shape, data_start + begin, data_start + end, crc)
        end_of_data = end
    return entries, doc.data


def _begin(spec: Any) -> int:
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if isinstance(offsets, list) and offsets and isinstance(offsets[0], int):
        return int(offsets[0])
    return -1


def _parse_doc(doc: Mapping[str, Any]) -> tuple[dict[str, bytes], Record, float]:
    fields = Fields(doc, "its metadata")
    if fields.integer("format") > FORMAT:
        raise MalformedDocument("its metadata", "it is of a newer format than this reader's")
    record = Record.from_value(fields.data.get("record"), "its record")
    if record is None:
        raise MalformedDocument("its record", "it is of a newer version than this reader's")
    documents = fields.data.get("documents", {})
    if not isinstance(documents, dict) or not all(isinstance(v, str) for v in documents.values()):
        raise MalformedDocument("its metadata", "its documents are not JSON texts by tag")
    written = fields.data.get("written", 0.0)
    if not isinstance(written, (int, float)) or isinstance(written, bool):
        raise MalformedDocument("its metadata", "its 'written' time is not a number")
    encoded = {tag: text.encode("utf-8") for tag, text in documents.items()}
    return encoded, record, float(written)
