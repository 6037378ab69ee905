"""Plugin assets: bulk bytes kept beside the events, read lazily.

Thumbnails are the one thing no view reads whole, and they are the largest part of
a record (50,000 images of 64 x 64 are 586 MiB). Kept in the event file, TensorBoard
would hold them all in memory. So they live, as TensorBoard's own projector keeps
its sprites, under ``<run>/plugins/deephys/``: one ``.npy`` file per dataset and
content, written once, that the plugin memory-maps and reads one image at a time.
The event stream records only a small reference to the file (see ``metadata``).

Example::

    relative = write_thumbnails("logs/run", "ood", thumbs)   # uint8 [N, H, W, 3]
    images = open_thumbnails("logs/run", relative)             # memory-mapped
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import quote

import numpy as np

from tb_plugin.metadata import PLUGIN_NAME

ASSET_ROOT = os.path.join("plugins", PLUGIN_NAME)
THUMBNAIL_DIR = "thumbnails"
_SAFE_NAME = re.compile(r"thumbnails/[A-Za-z0-9_.~%-]{1,300}\.npy")


def thumbnails_digest(thumbnails: np.ndarray) -> str:
    """A content digest of a thumbnail array (shape included)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(thumbnails.shape).encode())
    digest.update(np.ascontiguousarray(thumbnails).data)
    return digest.hexdigest()


def write_thumbnails(
    run_dir: str, dataset: str, thumbnails: np.ndarray, digest: str | None = None
) -> str:
    """Write ``thumbnails`` (uint8 [N, H, W, 3]) under ``run_dir``; return its relative name.

    The name holds the dataset and a digest of the content (``digest``, when the
    caller computed :func:`thumbnails_digest` already), so a changed set gets a new
    file and an unchanged one is never rewritten. Writes are atomic.
    """
    thumbnails = np.ascontiguousarray(thumbnails, dtype=np.uint8)
    if thumbnails.ndim != 4 or thumbnails.shape[-1] != 3:
        raise ValueError(f"thumbnails must be uint8 [N, H, W, 3], got shape {thumbnails.shape}")
    digest = digest or thumbnails_digest(thumbnails)
    name = f"{quote(dataset, safe='')[:200]}-{digest}.npy"
    relative = f"{THUMBNAIL_DIR}/{name}"
    path = os.path.join(run_dir, ASSET_ROOT, THUMBNAIL_DIR, name)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, thumbnails, allow_pickle=False)
        os.replace(tmp, path)
    return relative


def asset_path(run_dir: str, relative: str) -> str:
    """The file of an asset name read from an event, refusing anything but our own
    plain file names (an event file is data: it must not steer file access)."""
    if not isinstance(relative, str) or not _SAFE_NAME.fullmatch(relative) or ".." in relative:
        raise ValueError(f"not a Deephys asset name: {relative!r}")
    return os.path.join(run_dir, ASSET_ROOT, *relative.split("/"))


def open_thumbnails(run_dir: str, relative: str) -> np.ndarray:
    """The thumbnails of an asset, memory-mapped (pages are read when used)."""
    return np.load(asset_path(run_dir, relative), mmap_mode="r", allow_pickle=False)
