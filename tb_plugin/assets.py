"""Plugin assets: bulk bytes kept beside the events, read lazily.

Thumbnails are the one thing no view reads whole, and they are the largest part of
a record (50,000 images of 64 x 64 are 586 MiB). Kept in the event file, TensorBoard
would hold them all in memory. So they live, as TensorBoard's own projector keeps
its sprites, under ``<run>/plugins/deephys/``: one ``.npy`` file per dataset and
content, written once, that the plugin reads one image at a time with positioned
reads. Never a memory map: a file truncated underneath a map kills the reading
process (SIGBUS); a :class:`ThumbnailFile` checks the file on every read instead.
The event stream records only a small reference to the file. Names and paths are
the log format's (``tb_plugin.metadata``); this module only writes and opens files.

Example::

    relative = write_thumbnails("logs/run", "ood", thumbs)   # uint8 [N, H, W, 3]
    images = open_thumbnails("logs/run", relative)             # a ThumbnailFile
    images[7]                                                   # one image, read now
"""

from __future__ import annotations

import os

import numpy as np

from tb_plugin.metadata import asset_path, thumbnail_asset_name, thumbnails_digest


def write_thumbnails(
    run_dir: str, dataset: str, thumbnails: np.ndarray, digest: str | None = None
) -> str:
    """Write ``thumbnails`` (uint8 [N, H, W, 3]) under ``run_dir``; return its asset name.

    The name holds the dataset and a digest of the content (``digest``, when the
    caller computed :func:`~tb_plugin.metadata.thumbnails_digest` already), so a
    changed set gets a new file and an unchanged one is never rewritten. Writes are
    atomic.
    """
    thumbnails = np.ascontiguousarray(thumbnails, dtype=np.uint8)
    if thumbnails.ndim != 4 or thumbnails.shape[-1] != 3:
        raise ValueError(f"thumbnails must be uint8 [N, H, W, 3], got shape {thumbnails.shape}")
    relative = thumbnail_asset_name(dataset, digest or thumbnails_digest(thumbnails))
    path = asset_path(run_dir, relative)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, thumbnails, allow_pickle=False)
        os.replace(tmp, path)
    return relative


class ThumbnailFile:
    """The uint8 ``[N, H, W, 3]`` thumbnails of one ``.npy`` asset, read on demand.

    Indexing reads one image's bytes with ``os.pread``; ``numpy.asarray`` reads all. Each
    read checks that the file is still the one whose header was read (same inode, size
    and modification time), and reads the header again when it was replaced. A file
    that is missing, truncated, or not uint8 ``[N, H, W, 3]`` raises ``ValueError`` (or
    ``FileNotFoundError``) with the path and the cause: never a crash.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int, int] | None = None
        self._refresh()

    def _refresh(self) -> None:
        stat = os.stat(self.path)
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity == self._identity:
            return
        with open(self.path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            except (ValueError, OSError, SyntaxError, TypeError) as error:
                raise ValueError(f"{self.path} is not a thumbnail file: {error}") from None
            offset = handle.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(
                f"{self.path} holds {dtype} {list(shape)}, not uint8 [N, H, W, 3] thumbnails"
            )
        expected = offset + int(np.prod(shape, dtype=np.int64))
        if stat.st_size != expected:
            raise ValueError(
                f"{self.path} is damaged: {stat.st_size} bytes where its header says "
                f"{expected} (truncated or overwritten; write the thumbnails again)"
            )
        self._offset, self.shape = offset, tuple(int(d) for d in shape)
        self._image_bytes = int(np.prod(self.shape[1:], dtype=np.int64))
        self._identity = identity

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return 4096  # what a reader keeps in memory: the header, not the pixels

    def __getitem__(self, index: int) -> np.ndarray:
        self._refresh()
        index = int(index)
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"image {index} of {self.shape[0]} in {self.path}")
        data = self._read(self._offset + index * self._image_bytes, self._image_bytes)
        return np.frombuffer(data, dtype=np.uint8).reshape(self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        self._refresh()
        data = self._read(self._offset, self._image_bytes * self.shape[0])
        array = np.frombuffer(data, dtype=np.uint8).reshape(self.shape).copy()
        return array if dtype is None else array.astype(dtype)

    def _read(self, offset: int, size: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:  # shrunk between the check and the read
            raise ValueError(f"{self.path} is damaged: it ended {size - len(data)} bytes early")
        return data


def open_thumbnails(run_dir: str, relative: str) -> ThumbnailFile:
    """The thumbnails of an asset, read an image at a time (see :class:`ThumbnailFile`)."""
    return ThumbnailFile(asset_path(run_dir, relative))
