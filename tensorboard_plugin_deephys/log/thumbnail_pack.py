"""Thumbnails stored encoded, one file per dataset and content, made for random access.

A thumbnail request is one ranged read whose bytes are served as they are. The file
(``thumbnails/<dataset>-<digest>.thumbs`` under the run's asset folder) holds::

    8 bytes   b"DPHYTHM1"
    4 bytes   little-endian uint32: the length L of the JSON header
    L bytes   {"count": N, "shape": [H, W, 3], "format": "png" | "jpeg",
               "digest": D, "index_digest": X}
    8(N+1)    little-endian uint64 offsets of each image in the data (the first is 0)
    4N        little-endian uint32 CRC-32C of each encoded image
    ...       the N encoded images, back to back

``D`` is the content digest of the pixels the images were encoded from (the one in
the file's name, ``metadata.thumbnails_digest``) and ``X`` ties the index to it
(:func:`index_digest`: a hash of ``D``, the offsets and the CRC-32Cs). Packs of the
first 0.2 versions lack both and are still read.

Opening reads the head (12 bytes per image: 600 KB for 50,000) and checks it against
the digest in the file's name: a pack that another set's or another training's pack
replaced (in place, by a rename, on an object store) names another digest and is
refused (:class:`ForeignPackError`), one whose index was changed does not match its
``X``; each image is then one ranged read, checked against its CRC-32C. Old packs,
without ``D``, cannot be checked on opening (the name's digest hashes the pixels'
CRC-32Cs, and JPEG does not give the pixels back): reading a PNG pack whole
(``numpy.asarray``) recomputes the digest from the decoded pixels.

The writer (``DeephysCallback``) picks the format per dataset: PNG (lossless) where
it is about as small as JPEG (drawn or synthetic images) or where JPEG would blur
the images (noise-like ones), else JPEG at quality 90 (photographs: about 1/7 of the
raw pixels at 64 px); ``docs/data_format.md`` has the measurements.

Example::

    data = pack([png_a, png_b], shape=(64, 64, 3), image_format="png", digest=digest)
    storage.write_bytes(path, data)   # path: .../thumbnails/<dataset>-<digest>.thumbs
    images = ThumbnailPack(path)
    images.encoded(1)     # png_b, as stored
    images[1]             # uint8 [64, 64, 3], decoded
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import struct
import time
import zlib
from collections.abc import Sequence

import google_crc32c
import numpy as np

from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.json_documents import Fields, MalformedDocument, parse_json
from tensorboard_plugin_deephys.log.metadata import thumbnails_digest

MAGIC = b"DPHYTHM1"
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_REMOTE_RECHECK_S = 5.0  # how long an object store's file is trusted between looks
_MAX_HEADER = 1 << 16
_MAX_SIDE = 4096  # pixels: thumbnails are small; a larger side is a damaged header
_DIGEST = re.compile(r"[0-9a-f]{32}")
# A content digest in an asset name: "<dataset>-<digest>.thumbs" (or ".npy")
_NAME_DIGEST = re.compile(r"-([0-9a-f]{32})\.(?:thumbs|npy)$")
FOREIGN = "holds other images than the record names"  # the words of a swapped pack


class ForeignPackError(ValueError):
    """A pack (or ``.npy`` file) whose content is not the one its name says: another
    set's or another training's images put in its place."""


def name_digest(path: str) -> str | None:
    """The content digest in a thumbnail file's name (``<dataset>-<digest>.thumbs``);
    None for a name without one."""
    found = _NAME_DIGEST.search(path)
    return found.group(1) if found else None


def image_checksums(thumbnails: np.ndarray) -> np.ndarray:
    """uint32 ``[N]``: the CRC-32C of each image's bytes (checked on every read)."""
    return np.fromiter(
        (google_crc32c.value(image.tobytes()) for image in thumbnails),
        dtype=np.uint32,
        count=len(thumbnails),
    )


def index_digest(digest: str, offsets: np.ndarray, crcs: np.ndarray) -> str:
    """What ties a pack's index (its offsets and per-image CRC-32Cs) to the content
    ``digest`` it was made for: a hash of the three, checked on every opening."""
    hashed = hashlib.blake2b(b"DPHYTHM1 index", digest_size=16)
    hashed.update(digest.encode("ascii"))
    hashed.update(np.ascontiguousarray(offsets, dtype="<u8").data)
    hashed.update(np.ascontiguousarray(crcs, dtype="<u4").data)
    return hashed.hexdigest()


def pack(
    encoded: Sequence[bytes], shape: Sequence[int], image_format: str, digest: str | None = None
) -> bytes:
    """The file holding ``encoded`` images of ``shape`` ``[H, W, 3]`` in ``image_format``,
    made from the pixels whose content digest (``metadata.thumbnails_digest``, the one
    in the file's name) is ``digest``. Without ``digest``, a pack as the first 0.2
    versions wrote them, without a content digest (tests make such packs)."""
    if image_format not in MEDIA_TYPES:
        raise ValueError(f"image_format must be one of {sorted(MEDIA_TYPES)}, not {image_format!r}")
    if digest is not None and not _DIGEST.fullmatch(digest):
        raise ValueError(f"digest must be 32 lowercase hex digits, not {digest!r}")
    sizes = np.fromiter((len(e) for e in encoded), dtype=np.uint64, count=len(encoded))
    offsets = np.concatenate([np.zeros(1, np.uint64), np.cumsum(sizes, dtype=np.uint64)])
    crcs = np.fromiter(
        (google_crc32c.value(bytes(e)) for e in encoded), dtype=np.uint32, count=len(encoded)
    )
    fields: dict = {"count": len(encoded), "shape": [int(n) for n in shape], "format": image_format}
    if digest is not None:
        fields.update(digest=digest, index_digest=index_digest(digest, offsets, crcs))
    header = json.dumps(fields).encode("utf-8")
    return b"".join(
        [
            MAGIC,
            struct.pack("<I", len(header)),
            header,
            offsets.astype("<u8").tobytes(),
            crcs.astype("<u4").tobytes(),
            *map(bytes, encoded),
        ]
    )


@dataclasses.dataclass(frozen=True)
class _Head:
    """What one look at a pack found (replaced whole when the file is replaced)."""

    identity: tuple
    seen_at: float
    shape: tuple[int, int, int, int]
    image_format: str
    data_start: int
    offsets: np.ndarray  # uint64 [N + 1]
    crcs: np.ndarray  # uint32 [N]
    digest: str | None  # the content digest in the header (None in the first 0.2 packs)


class ThumbnailPack:
    """The encoded thumbnails of one ``.thumbs`` asset, read an image at a time.

    :meth:`encoded` gives an image's stored bytes (checked against its CRC-32C),
    indexing gives it decoded (uint8 ``[H, W, 3]``), ``numpy.asarray`` all of them.
    A file that is missing raises ``FileNotFoundError``; one that is truncated,
    replaced by something else or damaged raises ``ValueError`` naming the file and the
    cause. Reads notice a replaced file (its identity is looked at again, on object
    stores at most every few seconds). Safe to share between threads.

    ``digest`` is the content digest the pack must hold (default: the one in its
    file name). A pack whose header names another one, or whose index does not
    match its header, raises :class:`ForeignPackError` (a ``ValueError``) on opening
    and on any read after it was replaced so; a pack written before the header held
    the digest is checked when read whole (PNG) and otherwise only by its count.
    """

    def __init__(self, path: str, digest: str | None = None) -> None:
        self.path = path
        self.digest = digest if digest is not None else name_digest(path)
        self._head: _Head | None = None
        self._current()

    @property
    def checked_on_open(self) -> bool:
        """Whether the pack's header names its content digest (checked on opening)."""
        return self._current().digest is not None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._current().shape

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self._current().image_format]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """What a reader keeps in memory: the index, not the images."""
        head = self._head
        return 4096 + (0 if head is None else head.offsets.nbytes + head.crcs.nbytes)

    def encoded(self, index: int) -> bytes:
        """Image ``index`` as stored (PNG or JPEG bytes), read now."""
        return self._encoded(self._current(), index)

    def __getitem__(self, index: int) -> np.ndarray:
        head = self._current()
        return self._decode(self._encoded(head, index), index, head.shape[1:])

    def _encoded(self, head: _Head, index: int) -> bytes:
        index = int(index)
        if not 0 <= index < head.shape[0]:
            raise IndexError(f"image {index} of {head.shape[0]} in {self.path}")
        start, end = int(head.offsets[index]), int(head.offsets[index + 1])
        data = storage.read_range(self.path, head.data_start + start, end - start)
        if len(data) != end - start:
            raise ValueError(
                f"{self.path} is damaged: it ended {end - start - len(data)} bytes early"
            )
        return self._checked(head, index, data)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        head = self._current()
        data = storage.read_range(self.path, head.data_start, int(head.offsets[-1]))
        if len(data) != int(head.offsets[-1]):
            raise ValueError(f"{self.path} is damaged: it ended before its last image")
        starts, ends = head.offsets[:-1].astype(np.int64), head.offsets[1:].astype(np.int64)
        crcs = head.crcs.tolist()
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            if google_crc32c.value(data[start:end]) != crcs[i]:
                self._checked(head, i, data[start:end])  # raises, in words
        images = np.empty(head.shape, dtype=np.uint8)
        # The writer's own PNG layout decodes without a codec, all images at once; any
        # other image, by Pillow.
        for i in _plain_pngs_into(data, starts, ends, images):
            images[i] = self._decode(data[starts[i] : ends[i]], i, head.shape[1:])
        if head.digest is None and head.image_format == "png" and self.digest is not None:
            self._check_pixels(images)  # an old pack: PNG gives the pixels back exactly
        return images if dtype is None else images.astype(dtype)

    def _check_pixels(self, images: np.ndarray) -> None:
        """Compare the content digest of ``images`` (decoded, lossless) with the name's."""
        found = thumbnails_digest(images.shape, image_checksums(images))
        if found != self.digest:
            raise ForeignPackError(
                f"{self.path} {FOREIGN}: its images hash to {found}, its name says "
                f"{self.digest} (another set's or another training's pack put in its "
                "place; write the thumbnails again)"
            )

    def _checked(self, head: _Head, index: int, data: bytes) -> bytes:
        """``data``, when they are image ``index``'s bytes whole (by its CRC-32C)."""
        if google_crc32c.value(data) != int(head.crcs[index]):
            raise ValueError(
                f"{self.path} is damaged: image {index} does not match its checksum "
                "(changed in storage; write the thumbnails again)"
            )
        return data

    def _decode(self, data: bytes, index: int, expected: tuple[int, ...]) -> np.ndarray:
        """Image ``index`` decoded, when it is ``expected`` ``(H, W, 3)``."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.size != (expected[1], expected[0]):  # before decoding any pixel
                    raise ValueError(f"it is {image.size[0]} x {image.size[1]} px")
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{self.path}: image {index} cannot be decoded: {error}") from None
        if pixels.shape != expected:
            raise ValueError(
                f"{self.path}: image {index} is {list(pixels.shape)}, not the file's "
                f"{list(expected)}"
            )
        return pixels

    def _current(self) -> _Head:
        """The head of the file as it is now (read again when it was replaced)."""
        head = self._head
        remote = storage.is_url(self.path)
        if head is not None and remote and time.monotonic() - head.seen_at < _REMOTE_RECHECK_S:
            return head
        identity = storage.identity(self.path)
        if head is not None and head.identity == identity:
            head = dataclasses.replace(head, seen_at=time.monotonic())
            self._head = head
            return head
        head = self._read_head(identity)
        self._head = head
        return head

    def _read_head(self, identity: tuple) -> _Head:
        size = identity[1]
        first = storage.read_range(self.path, 0, 12)
        if len(first) < 12 or first[:8] != MAGIC:
            raise ValueError(f"{self.path} is not a Deephys thumbnail file")
        (header_length,) = struct.unpack("<I", first[8:12])
        if header_length > _MAX_HEADER:
            raise ValueError(f"{self.path} is damaged: a header of {header_length} bytes")
        try:
            what = "its header"
            header = Fields(
                parse_json(storage.read_range(self.path, 12, header_length), what), what
            )
            count, shape = header.count("count"), header.counts("shape")
            image_format = header.text("format")
            digest = header.optional_text("digest")
            index_hash = header.optional_text("index_digest")
            if len(shape) != 3:
                raise MalformedDocument(what, f"its 'shape' has {len(shape)} sides, not 3")
            height, width, channels = shape
        except MalformedDocument as error:
            raise ValueError(f"{self.path} is damaged: {error}") from None
        numbers = (count, height, width, channels)
        if (
            not all(type(n) is int for n in numbers)  # not bool, float, Infinity or text
            or not isinstance(image_format, str)
            or image_format not in MEDIA_TYPES
            or channels != 3
            or not (1 <= height <= _MAX_SIDE and 1 <= width <= _MAX_SIDE)
            or count < 0
            or 12 + header_length + 12 * count + 8 > size
        ):
            raise ValueError(
                f"{self.path} holds {str(count)[:20]} {str(image_format)[:20]} images of "
                f"{str([height, width, channels])[:60]} in {size} bytes: not a thumbnail file "
                "this version reads, or damaged"
            )
        index_start = 12 + header_length
        raw = storage.read_range(self.path, index_start, 8 * (count + 1) + 4 * count)
        if len(raw) != 12 * count + 8:  # the file shrank since its size was read
            raise ValueError(f"{self.path} is damaged: it ended inside its index")
        offsets = np.frombuffer(raw[: 8 * (count + 1)], dtype="<u8").astype(np.uint64)
        crcs = np.frombuffer(raw[8 * (count + 1) :], dtype="<u4").astype(np.uint32)
        data_start = index_start + len(raw)
        if (
            len(crcs) != count
            or offsets[0] != 0
            or np.any(np.diff(offsets.astype(np.int64)) <= 0)
            or data_start + int(offsets[-1]) != size
        ):
            raise ValueError(
                f"{self.path} is damaged: its index does not fit its {size} bytes "
                "(truncated or overwritten; write the thumbnails again)"
            )
        self._check_digest(digest, index_hash, offsets, crcs)
        shape = (count, int(height), int(width), 3)
        return _Head(
            identity, time.monotonic(), shape, image_format, data_start, offsets, crcs, digest
        )

    def _check_digest(
        self, digest: str | None, index_hash: str | None, offsets: np.ndarray, crcs: np.ndarray
    ) -> None:
        """The header's content digest against the name's, and the index against both."""
        if digest is None and index_hash is None:
            return  # a pack written before the header held them
        if digest is None or index_hash is None or not _DIGEST.fullmatch(digest):
            raise ValueError(
                f"{self.path} is damaged: its header's content digest is "
                f"{str(digest)[:40]!r} with index digest {str(index_hash)[:40]!r}"
            )
        if self.digest is not None and digest != self.digest:
            raise ForeignPackError(
                f"{self.path} {FOREIGN}: it was written for the thumbnails {digest}, its "
                f"name says {self.digest} (another set's or another training's pack put in "
                "its place; write the thumbnails again)"
            )
        if index_digest(digest, offsets, crcs) != index_hash:
            raise ForeignPackError(
                f"{self.path} {FOREIGN}: its index does not match the content digest of "
                "its header (images of another pack put in its place, or a damaged index; "
                "write the thumbnails again)"
            )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk, its CRC included


def _plain_pngs_into(
    data: bytes, starts: np.ndarray, ends: np.ndarray, out: np.ndarray
) -> list[int]:
    """Decode the images ``data[starts[i]:ends[i]]`` that are of the writer's plain PNG
    layout into ``out`` (uint8 ``[N, H, W, 3]``); return the indices of the others
    (left to Pillow).

    Every image of a pack has the same size, so a plain one begins with the same 33
    bytes (:func:`_plain_prefix`: signature and IHDR): their heads, IDAT lengths and
    IEND tails are checked for all images at once with NumPy, then each IDAT is
    decompressed (a view, no copy), and every scanline's filter byte is checked for
    all of them together."""
    n, height, width, _ = out.shape
    line = 1 + 3 * width
    if n == 0:
        return []
    prefix = _plain_prefix(height, width)
    raw = np.frombuffer(data, dtype=np.uint8)
    head = len(prefix) + 8  # the prefix, then the IDAT's length and tag
    sizes = ends - starts
    room = sizes >= head + len(_IEND)
    where = np.where(room, starts, 0)[:, None] + np.arange(head)
    heads = raw[where]
    plain = room & (heads[:, : len(prefix)] == np.frombuffer(prefix, np.uint8)).all(axis=1)
    plain &= (heads[:, len(prefix) + 4 :] == np.frombuffer(b"IDAT", np.uint8)).all(axis=1)
    lengths = heads[:, len(prefix) : len(prefix) + 4].astype(np.int64) @ (
        1 << np.arange(24, -8, -8)
    )
    plain &= sizes == head + lengths + 4 + len(_IEND)  # IDAT, its CRC, then IEND alone
    tails = raw[np.where(plain, ends, len(_IEND))[:, None] - len(_IEND) + np.arange(len(_IEND))]
    plain &= (tails == np.frombuffer(_IEND, np.uint8)).all(axis=1)
    # Each IDAT inflated straight into one array of scanlines (its rows' filter bytes
    # included), read through views: no bytes joined or copied per image.
    candidates = np.flatnonzero(plain)
    begins = starts[candidates] + head
    spans = zip(begins.tolist(), (begins + lengths[candidates]).tolist(), strict=True)
    rows = np.empty((len(candidates), height, line), dtype=np.uint8)
    flat, size, view = rows.reshape(-1).data, height * line, memoryview(data)
    inflated = np.ones(len(candidates), dtype=bool)
    for k, (begin, end) in enumerate(spans):
        try:
            lines = zlib.decompress(view[begin:end])
        except zlib.error:
            inflated[k] = False
            continue
        if len(lines) == size:
            flat[k * size : (k + 1) * size] = lines
        else:
            inflated[k] = False
    unfiltered = inflated & ~rows[:, :, 0].any(axis=1)  # (rows not inflated: unset, masked)
    chosen = candidates[unfiltered]
    if len(chosen) == n:  # every image (the writer's packs): one copy, no index
        out[...] = rows[:, :, 1:].reshape(out.shape)
        return []
    out[chosen] = rows[unfiltered, :, 1:].reshape(len(chosen), height, width, 3)
    done = np.zeros(n, dtype=bool)
    done[chosen] = True
    return np.flatnonzero(~done).tolist()


def _plain_prefix(height: int, width: int) -> bytes:
    """The 33 bytes that begin the writer's plain PNG of this size: the signature and
    an IHDR of 8-bit RGB, no interlace, with its CRC."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_SIGNATURE + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def _plain_png_into(data: bytes, out: np.ndarray) -> bool:
    """Decode one image ``data`` into ``out`` (uint8 ``[H, W, 3]``) when it is of the
    writer's plain layout (:func:`_plain_pngs_into`); False, touching nothing, for any
    other PNG or JPEG (Pillow decodes those)."""
    one = np.asarray([0]), np.asarray([len(data)])
    return not _plain_pngs_into(data, *one, out[None])
