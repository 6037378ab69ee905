"""Thumbnails encoded for the log (``tensorboard_plugin_deephys.log.thumbnail_pack``): PNG where
lossless
costs little, else JPEG.

PNG keeps drawn and synthetic images (flat colours, sharp edges) exact and is about
as small as JPEG for them; photographs take about a seventh of their raw pixels as
JPEG at quality 90 (PSNR about 37 dB at 64 px) and half as PNG. The format is chosen
per dataset from a sample of its images: JPEG where it is smaller and keeps the
images readable (PSNR at least 30 dB), else PNG (noise-like images, which JPEG
would blur beyond recognition, stay exact). JPEG is torchvision's libjpeg-turbo;
PNG is written here over zlib (libpng's set-up per call costs five times the
compression of a small image). Both run on a few threads.

Example::

    image_format, encoded = encode(pixels)   # uint8 [N, H, W, 3] -> ("png", [b"...", ...])
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import struct
import zlib

import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg

JPEG_QUALITY = 90
PNG_LEEWAY = 1.1  # PNG is chosen while it is at most this many times JPEG's size...
MIN_JPEG_PSNR = 30.0  # ...or while JPEG would lose more than this (noise-like images)
_SAMPLE = 32  # images whose sizes decide the format
_CHUNK = 512  # images per task: one call's memory stays small, the threads stay busy
_THREADS = min(8, os.cpu_count() or 1)


def encode(pixels: np.ndarray) -> tuple[str, list[bytes]]:
    """The image format chosen for ``pixels`` (uint8 ``[N, H, W, 3]``) and each image
    encoded in it, on a few threads (torchvision's encoders release the GIL)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).permute(0, 3, 1, 2)
    if len(images) == 0:
        return "png", []
    sample = np.unique(np.linspace(0, len(images) - 1, min(_SAMPLE, len(images))).astype(int))
    sampled = [images[i] for i in sample]
    png = sum(len(b) for b in _pngs(sampled))
    jpegs = _jpegs(sampled)
    smaller = PNG_LEEWAY * sum(map(len, jpegs)) < png
    readable = smaller and _psnr(sampled, jpegs) >= MIN_JPEG_PSNR
    image_format, encode_chunk = ("jpeg", _jpegs) if readable else ("png", _pngs)
    chunks = [list(images[i : i + _CHUNK]) for i in range(0, len(images), _CHUNK)]
    if len(chunks) == 1:
        return image_format, encode_chunk(chunks[0])
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
        return image_format, [data for chunk in pool.map(encode_chunk, chunks) for data in chunk]


def _psnr(images: list[torch.Tensor], jpegs: list[bytes]) -> float:
    """The PSNR (dB) of ``jpegs`` decoded against ``images``, over all their pixels."""
    decoded = [decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)) for data in jpegs]
    squared = sum(
        float(((d.float() - i.float()) ** 2).sum()) for d, i in zip(decoded, images, strict=True)
    )
    mse = squared / sum(i.numel() for i in images)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _pngs(images: list[torch.Tensor]) -> list[bytes]:
    """8-bit RGB PNGs, written here: an IHDR, one IDAT of zlib-compressed scanlines
    (filter type 0) and an IEND. libpng (torchvision's and PIL's encoders) spends
    about 100 us per call setting itself up, five times zlib's work on a 28 px image;
    the scanlines of all ``images`` are laid out in one NumPy operation instead."""
    if not images:
        return []
    pixels = torch.stack(images).permute(0, 2, 3, 1).numpy()  # [N, H, W, 3]
    n, height, width, _ = pixels.shape
    scanlines = np.zeros((n, height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0
    scanlines[:, :, 1:] = pixels.reshape(n, height, 3 * width)
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    end = _chunk(b"IEND", b"")
    return [
        b"".join((_PNG_SIGNATURE, header, _chunk(b"IDAT", zlib.compress(lines, 6)), end))
        for lines in scanlines
    ]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join(
        (struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(kind + data)))
    )


def _jpegs(images: list[torch.Tensor]) -> list[bytes]:
    encoded = encode_jpeg([image.contiguous() for image in images], quality=JPEG_QUALITY)
    return [data.numpy().tobytes() for data in encoded]
