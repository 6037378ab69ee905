"""Plugin assets: bulk bytes kept beside the events, read lazily.

Thumbnails are the one thing no view reads whole, and they are the largest part of
a record (50,000 images of 64 x 64 are 586 MiB). Kept in the event file, TensorBoard
would hold them all in memory. So they live, as TensorBoard's own projector keeps
its sprites, under ``<run>/plugins/deephys/``: one ``.npy`` file per dataset and
content, written once, that the plugin memory-maps and reads one image at a time.
The event stream records only a small reference to the file. Names and paths are
the log format's (``tb_plugin.metadata``); this module only writes and opens files.

Example::

    relative = write_thumbnails("logs/run", "ood", thumbs)   # uint8 [N, H, W, 3]
    images = open_thumbnails("logs/run", relative)             # memory-mapped
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


def open_thumbnails(run_dir: str, relative: str) -> np.ndarray:
    """The thumbnails of an asset, memory-mapped (pages are read when used)."""
    return np.load(asset_path(run_dir, relative), mmap_mode="r", allow_pickle=False)
