"""Plugin assets: bulk bytes kept beside the events, read lazily.

Thumbnails are the one thing no view reads whole, and they are the largest part of
a record (50,000 images of 64 x 64 are 586 MiB raw). Kept in the event file,
TensorBoard would hold them all in memory. So they live, as TensorBoard's own
projector keeps its sprites, under ``<run>/plugins/deephys/``: one ``.thumbs`` pack
per dataset and content (``tensorboard_plugin_deephys.log.thumbnail_pack``: the
images encoded as PNG or JPEG, with an index), written once by
:func:`write_thumbnail_pack`, that the plugin reads one image at a time with ranged
reads, each checked against its CRC-32C. The event stream records only a small
reference to the file. Names and paths are the log format's
(``tensorboard_plugin_deephys.log.metadata``); this module only writes and opens
files.

Logs written before 0.2 hold raw pixels instead: one ``.npy`` file per dataset and
content, with the CRC-32C of each image in ``<name>.crc32c.npy`` beside it. They are
still read (:class:`ThumbnailFile`, positioned reads, never a memory map: a file
truncated underneath a map kills the reading process with SIGBUS), and
:func:`write_thumbnails` still writes them (the tests and benchmarks make such logs).

Example::

    relative = write_thumbnail_pack("logs/run", "ood", Thumbnails.of(thumbs), encode)
    images = open_thumbnails("logs/run", relative)     # a ThumbnailPack
    images[7]                                           # one image, read and decoded now
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable, Sequence
from typing import IO

import google_crc32c
import numpy as np

from tensorboard_plugin_deephys.log import npy, storage, thumbnail_pack
from tensorboard_plugin_deephys.log.metadata import (
    ASSET_ROOT,
    NPY_SUFFIX,
    PACK_SUFFIX,
    asset_path,
    thumbnail_asset_name,
    thumbnails_digest,
)
from tensorboard_plugin_deephys.log.storage import TMP_SUFFIX
from tensorboard_plugin_deephys.log.thumbnail_pack import image_checksums

CHECKSUM_SUFFIX = ".crc32c.npy"  # beside <name>.npy: uint32 [N], one per image


@dataclasses.dataclass(frozen=True)
class Thumbnails:
    """A dataset's thumbnails with their per-image CRC-32Cs and content digest,
    computed once (:meth:`of`) for deciding whether to write them and for writing."""

    pixels: np.ndarray  # uint8 [N, H, W, 3]
    checksums: np.ndarray  # uint32 [N]
    digest: str

    @classmethod
    def of(cls, thumbnails: np.ndarray | Thumbnails) -> Thumbnails:
        """``thumbnails`` with their checksums and digest (as given, when made already)."""
        if isinstance(thumbnails, Thumbnails):
            return thumbnails
        pixels = np.ascontiguousarray(thumbnails, dtype=np.uint8)
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"thumbnails must be uint8 [N, H, W, 3], got shape {pixels.shape}")
        checksums = image_checksums(pixels)
        return cls(pixels, checksums, thumbnails_digest(pixels.shape, checksums))


def write_thumbnail_pack(
    run_dir: str,
    dataset: str,
    thumbnails: Thumbnails,
    encode: Callable[[np.ndarray], tuple[str, Sequence[bytes]]],
) -> str:
    """Write ``thumbnails`` encoded, as one ``.thumbs`` pack
    (``tensorboard_plugin_deephys.log.thumbnail_pack``) under ``run_dir``; return its
    asset name. ``encode(pixels)`` gives the image format ("png" or "jpeg") and each
    image's bytes; it is called only when the file is new (the name holds the dataset
    and the content digest, as for :func:`write_thumbnails`). One write, complete or
    absent. The pack's header holds the content digest, so that a pack put in the
    place of another is refused when opened (``thumbnail_pack.ForeignPackError``)."""
    relative = thumbnail_asset_name(dataset, thumbnails.digest, PACK_SUFFIX)
    path = asset_path(run_dir, relative)
    if not storage.exists(path):
        image_format, encoded = encode(thumbnails.pixels)
        if len(encoded) != len(thumbnails.pixels):
            raise ValueError(
                f"{len(encoded)} encoded images for {len(thumbnails.pixels)} thumbnails"
            )
        data = thumbnail_pack.pack(
            encoded, thumbnails.pixels.shape[1:], image_format, digest=thumbnails.digest
        )
        storage.write_bytes(path, data)
    return relative


def write_thumbnails(run_dir: str, dataset: str, thumbnails: np.ndarray | Thumbnails) -> str:
    """Write ``thumbnails`` (uint8 [N, H, W, 3], or :class:`Thumbnails` made already)
    as raw pixels (the ``.npy`` format of logs before 0.2, kept for reading them and
    for tests) under ``run_dir``; return its asset name.

    The name holds the dataset and the content digest, so a changed set gets a new
    file and an unchanged one is never rewritten. Writes are atomic.
    """
    thumbnails = Thumbnails.of(thumbnails)
    relative = thumbnail_asset_name(dataset, thumbnails.digest, NPY_SUFFIX)
    path = asset_path(run_dir, relative)
    if not storage.exists(path):
        # The checksums first: a thumbnail file that exists always has them beside it.
        save_array(checksum_path(path), thumbnails.checksums)
        save_array(path, thumbnails.pixels)
    return relative


def save_array(path: str, array: np.ndarray) -> None:
    """``array`` as a ``.npy`` file at ``path`` (local or a URL), complete or absent."""

    def write(handle: IO[bytes]) -> None:
        np.save(handle, array, allow_pickle=False)

    if not storage.is_url(path):
        storage.write_with(path, write)  # streamed to a temporary file, then renamed
        return
    buffer = io.BytesIO()
    write(buffer)
    storage.write_bytes(path, buffer.getbuffer())


def checksum_path(path: str) -> str:
    """Where the per-image checksums of the thumbnail file ``path`` live."""
    return f"{path[: -len('.npy')]}{CHECKSUM_SUFFIX}"


def remove_stale_temporaries(run_dir: str, older_than_s: float = 3600.0) -> list[str]:
    """Delete the temporary files that interrupted writes left under ``run_dir``'s asset
    folder (``*<pid>.tmp``, untouched for ``older_than_s``: a write in progress elsewhere
    is younger); return their paths."""
    removed: list[str] = []
    now = time.time()
    if storage.is_url(run_dir):  # object stores get whole objects: nothing is left over
        return removed
    for folder, _, names in os.walk(storage.join(run_dir, *ASSET_ROOT.split("/"))):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if name.endswith(TMP_SUFFIX) and now - os.stat(path).st_mtime > older_than_s:
                    os.remove(path)
                    removed.append(path)
            except OSError:  # gone already, or not ours to remove
                continue
    return removed


@dataclasses.dataclass(frozen=True)
class _Header:
    """What one look at a thumbnail file found: replaced whole, never field by field, so
    that a request reading while another notices a replaced file sees one or the other."""

    identity: tuple  # the file's and its checksums' storage.identity
    offset: int  # where the pixels start
    shape: tuple[int, int, int, int]
    checksums: np.ndarray | None  # uint32 [N], or None for files written before them

    @property
    def image_bytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.shape[3]


class ThumbnailFile:
    """The uint8 ``[N, H, W, 3]`` thumbnails of one ``.npy`` asset, read on demand.

    Indexing reads one image's bytes with one ranged read (``os.pread`` locally, a
    ranged GET on object stores: ``tensorboard_plugin_deephys.log.storage``);
    ``numpy.asarray`` reads all. Each read checks that the file and its checksums are
    still those whose header was read (same inode, size and modification time; size
    and ETag on object stores), and reads them again when they were replaced; each
    image read is compared with its CRC-32C (files written before the
    checksums existed are read unchecked). A file that is missing, truncated, not
    uint8 ``[N, H, W, 3]`` with images of at least one pixel, or whose pixels do not
    match raises ``ValueError`` (or ``FileNotFoundError``) with the path and the cause:
    never a crash. The content digest in the file's name (``digest``) is recomputed
    from the checksums beside it on each reading of the header: a file and checksums
    of other images put in their place raise ``thumbnail_pack.ForeignPackError``.
    Safe to share between threads.
    """

    def __init__(self, path: str, digest: str | None = None) -> None:
        self.path = path
        self.digest = digest if digest is not None else thumbnail_pack.name_digest(path)
        self._header: _Header | None = None
        self._current()

    def _current(self) -> _Header:
        """The header of the file as it is now (read again when it was replaced)."""
        file_identity = storage.identity(self.path)
        try:
            sums_identity = storage.identity(checksum_path(self.path))
        except FileNotFoundError:
            sums_identity = None
        identity = (*file_identity, sums_identity)
        header = self._header
        if header is not None and header.identity == identity:
            return header
        with storage.open_read(self.path) as handle:
            try:
                shape, fortran, dtype = npy.read_header(handle)
            except (ValueError, OSError, SyntaxError, TypeError) as error:
                raise ValueError(f"{self.path} is not a thumbnail file: {error}") from None
            offset = handle.tell()
        if (
            dtype != np.uint8
            or fortran
            or len(shape) != 4
            or shape[-1] != 3
            or min(shape[1:3], default=0) < 1
        ):
            raise ValueError(
                f"{self.path} holds {dtype} {list(shape)}, not uint8 [N, H, W, 3] thumbnails"
            )
        expected = offset + int(np.prod(shape, dtype=np.int64))
        if file_identity[1] != expected:
            raise ValueError(
                f"{self.path} is damaged: {file_identity[1]} bytes where its header says "
                f"{expected} (truncated or overwritten; write the thumbnails again)"
            )
        count, height, width, channels = (int(d) for d in shape)  # four: checked above
        checksums = self._read_checksums(count)
        shape4 = (count, height, width, channels)
        if checksums is not None and self.digest is not None:
            found = thumbnails_digest(shape4, checksums)
            if found != self.digest:
                raise thumbnail_pack.ForeignPackError(
                    f"{self.path} {thumbnail_pack.FOREIGN}: its checksums hash to {found}, "
                    f"its name says {self.digest} (another set's or another training's "
                    "thumbnails put in its place; write the thumbnails again)"
                )
        header = _Header(identity, offset, shape4, checksums)
        self._header = header
        return header

    def _read_checksums(self, count: int) -> np.ndarray | None:
        """The per-image checksums beside the file; None for files written before them."""
        path = checksum_path(self.path)
        try:
            checksums = npy.loads(storage.read_bytes(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{path} (the checksums of {self.path}) is damaged: {error}") from None
        if checksums.dtype != np.uint32 or checksums.shape != (count,):
            raise ValueError(
                f"{path} holds {checksums.dtype} {list(checksums.shape)}, not the "
                f"{count} checksums of {self.path}"
            )
        return checksums

    def _check(self, header: _Header, first: int, data: bytes) -> None:
        """Compare the images from ``first`` on in ``data`` with their checksums."""
        if header.checksums is None:
            return
        size = header.image_bytes
        for i in range(len(data) // size):
            if google_crc32c.value(data[i * size : (i + 1) * size]) != int(
                header.checksums[first + i]
            ):
                raise ValueError(
                    f"{self.path} is damaged: image {first + i} does not match its checksum "
                    "(changed on disk; write the thumbnails again)"
                )

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._current().shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """What a reader keeps in memory: the header and the checksums, not the pixels."""
        header = self._header
        return 4096 + (0 if header is None or header.checksums is None else header.checksums.nbytes)

    def __getitem__(self, index: int) -> np.ndarray:
        header = self._current()
        index = int(index)
        if not 0 <= index < header.shape[0]:
            raise IndexError(f"image {index} of {header.shape[0]} in {self.path}")
        size = header.image_bytes
        data = self._read(header.offset + index * size, size)
        self._check(header, index, data)
        return np.frombuffer(data, dtype=np.uint8).reshape(header.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        header = self._current()
        data = self._read(header.offset, header.image_bytes * header.shape[0])
        self._check(header, 0, data)
        array = np.frombuffer(data, dtype=np.uint8).reshape(header.shape).copy()
        return array if dtype is None else array.astype(dtype)

    def _read(self, offset: int, size: int) -> bytes:
        data = storage.read_range(self.path, offset, size)
        if len(data) != size:  # shrunk between the check and the read
            raise ValueError(f"{self.path} is damaged: it ended {size - len(data)} bytes early")
        return data


def open_thumbnails(run_dir: str, relative: str) -> ThumbnailFile | thumbnail_pack.ThumbnailPack:
    """The thumbnails of an asset, read an image at a time: a
    ``thumbnail_pack.ThumbnailPack`` for encoded ones, a :class:`ThumbnailFile` for
    the raw pixels of earlier logs. Each is checked against the content digest in
    ``relative`` (``thumbnail_pack.ForeignPackError``, a ``ValueError``, when it holds
    other images)."""
    path = asset_path(run_dir, relative)
    digest = thumbnail_pack.name_digest(relative)
    if relative.endswith(PACK_SUFFIX):
        return thumbnail_pack.ThumbnailPack(path, digest)
    return ThumbnailFile(path, digest)
