"""Reading a whole pack at once: the writer's own PNGs decode without a codec, every
other image through Pillow, all to the same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deephys_lightning.writing import thumbnail_encoding
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.thumbnail_pack import ThumbnailPack, _plain_png_into, pack


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _pillow_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # filtered scanlines, maybe
    return out.getvalue()


@pytest.mark.parametrize("shape", [(1, 1, 3), (9, 7, 3), (64, 48, 3)])
def test_the_writers_pngs_decode_to_pillows_pixels(shape):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    pixels[0] = 0  # flat
    pixels[1] = np.arange(shape[1], dtype=np.uint8)[None, :, None]  # a ramp
    image_format, encoded = thumbnail_encoding.encode(pixels)
    assert image_format == "png"
    for data, expected in zip(encoded, pixels, strict=True):
        out = np.zeros(shape, np.uint8)
        assert _plain_png_into(data, out)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(out, _pillow(data))


def test_other_images_are_left_to_pillow():
    ramp = np.broadcast_to(np.arange(16, dtype=np.uint8)[None, :, None] * 16, (8, 16, 3))
    image = torch.from_numpy(np.ascontiguousarray(ramp)).permute(2, 0, 1)
    jpeg = thumbnail_encoding._jpegs([image])
    out = np.full((8, 16, 3), 7, np.uint8)
    for data in (_pillow_png(np.ascontiguousarray(ramp)), jpeg[0]):
        assert not _plain_png_into(data, out)
    own = thumbnail_encoding._pngs([image])
    assert not _plain_png_into(own[0], np.zeros((8, 15, 3), np.uint8))  # another size
    assert not _plain_png_into(own[0][:-20], out)  # cut short
    assert (out == 7).all()  # untouched


@pytest.mark.parametrize("maker", ["writer", "pillow"])
def test_a_whole_pack_reads_as_its_images_one_by_one(tmp_path, maker):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (20, 12, 10, 3), dtype=np.uint8)
    if maker == "writer":
        image_format, encoded = thumbnail_encoding.encode(pixels)
    else:
        image_format, encoded = "png", [_pillow_png(p) for p in pixels]
    path = str(tmp_path / "set.thumbs")
    storage.write_bytes(path, pack(encoded, pixels.shape[1:], image_format))
    images = ThumbnailPack(path)
    whole = np.asarray(images)
    np.testing.assert_array_equal(whole, pixels)
    for i in (0, 7, 19):
        np.testing.assert_array_equal(images[i], whole[i])
