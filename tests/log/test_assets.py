"""Thumbnails live as asset files beside the events, read lazily and safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plugin_client import plugin_client
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.recording.capture import to_thumbnails
from tensorboard_plugin_deephys.log import assets, metadata, thumbnail_pack
from tensorboard_plugin_deephys.log.assets import CHECKSUM_SUFFIX, image_checksums
from tensorboard_plugin_deephys.log.thumbnail_pack import ThumbnailPack


def test_thumbnails_are_asset_files_not_event_payload(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    big = random_set(200, 1)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders={"a/b": loader(big, 50)})
    run_dir = t.logger.log_dir
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    # one file: the set did not change between epochs
    (name,) = os.listdir(folder)
    assert name.startswith("a%2Fb-") and name.endswith(".thumbs")
    pack = ThumbnailPack(os.path.join(folder, name))
    assert pack.shape == (200, 8, 8, 3)
    expected = to_thumbnails(big.tensors[0], 64).numpy()
    thumbs = read_log(run_dir).thumbnails("a/b")
    assert pack.media_type == "image/png"  # noise: JPEG would not keep it readable
    np.testing.assert_array_equal(thumbs, expected)
    events = [f for f in os.listdir(run_dir) if f.startswith("events")]
    event_bytes = sum(os.path.getsize(os.path.join(run_dir, f)) for f in events)
    assert event_bytes < expected.nbytes * 2  # the events carry only a reference


def test_drawn_and_noisy_images_are_kept_lossless_and_photographs_as_jpeg():
    from sklearn.datasets import load_sample_images

    from deephys_lightning.writing import thumbnail_encoding

    drawn = np.zeros((40, 28, 28, 3), np.uint8)
    drawn[:, 8:20, 10:14] = [220, 40, 40]  # flat colours, sharp edges
    image_format, encoded = thumbnail_encoding.encode(drawn)
    assert image_format == "png" and len(encoded) == 40
    photo = load_sample_images().images[0]
    crops = np.stack([photo[y : y + 64, x : x + 64] for y in range(0, 320, 40) for x in (0, 300)])
    image_format, encoded = thumbnail_encoding.encode(crops)
    assert image_format == "jpeg"
    assert sum(map(len, encoded)) < crops.nbytes / 4
    noise = np.random.default_rng(0).integers(0, 256, (20, 31, 17, 3), dtype=np.uint8)
    image_format, encoded = thumbnail_encoding.encode(noise)
    assert image_format == "png"  # JPEG's loss would be too large
    for data, pixels in zip(encoded, noise, strict=True):  # PNGs any decoder reads exactly
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize(
    "relative",
    [
        "../../etc/passwd",
        "thumbnails/../../x.npy",
        "/etc/passwd",
        "thumbnails/a/b.npy",
        "thumbnails/x.txt",
        "thumbnails/..npy/..",
        "",
        None,
    ],
)
def test_asset_names_from_events_cannot_leave_the_asset_folder(tmp_path, relative):
    with pytest.raises(ValueError, match="not a Deephys asset name"):
        metadata.asset_path(str(tmp_path), relative)


def test_write_thumbnails_is_content_addressed(tmp_path):
    a = np.zeros((3, 4, 4, 3), np.uint8)
    first = assets.write_thumbnails(str(tmp_path), "set", a)
    assert assets.write_thumbnails(str(tmp_path), "set", a) == first
    second = assets.write_thumbnails(str(tmp_path), "set", a + 1)
    assert second != first
    np.testing.assert_array_equal(assets.open_thumbnails(str(tmp_path), second), a + 1)
    assert first.endswith(".npy")  # the raw format of logs before 0.2, still written on request
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        assets.write_thumbnails(str(tmp_path), "set", np.zeros((3, 4, 4), np.uint8))


@pytest.mark.fault
def test_a_thumbnail_file_changed_while_served_is_an_error_never_a_crash(tmp_path):
    """Truncated in place (cp over it, rsync --inplace), replaced, deleted: each answers
    a JSON error with the cause, and the server process (this one) lives on."""
    run_dir = _legacy_run(tmp_path)
    client = plugin_client(tmp_path / "logs")
    url = "/data/plugin/deephys/thumbnail?run=legacy&dataset=ind&index={}"
    first = client.get(url.format(11))
    assert first.status_code == 200 and first.headers["Content-Type"] == "image/png"
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    (name,) = [n for n in os.listdir(folder) if n.startswith("ind-") and _is_image_file(n)]
    path = os.path.join(folder, name)
    with open(path, "r+b") as handle:  # truncated in place, under the cached reader
        handle.truncate(os.path.getsize(path) // 2)
    for index in (0, 11):
        response = client.get(url.format(index))
        assert response.status_code == 404, response.data[:200]
        assert "damaged" in response.json["error"]
    other = np.full((12, 8, 8, 3), 200, np.uint8)
    with open(path + ".new", "wb") as handle:  # an atomic replace with other pixels...
        np.save(handle, other, allow_pickle=False)
    os.replace(path + ".new", path)
    unchecked = client.get(url.format(3))  # ...that its checksums do not vouch for
    assert unchecked.status_code == 404 and "checksum" in unchecked.json["error"]
    np.save(path[: -len(".npy")] + CHECKSUM_SUFFIX, image_checksums(other))  # both, as a copy
    replaced = client.get(url.format(3))  # other images than the name's digest: refused
    assert replaced.status_code == 404
    assert "holds other images than the record names" in replaced.json["error"]
    os.remove(path)
    gone = client.get(url.format(3))
    assert gone.status_code == 404 and "deleted" in gone.json["error"]


DAMAGED = {
    "empty": lambda path: open(path, "wb").close(),
    "zeroed header": lambda path: _overwrite(path, 0, b"\0" * 64),
    "a directory": lambda path: (os.remove(path), os.mkdir(path)),
    "a system file": lambda path: (os.remove(path), os.symlink("/etc/hostname", path)),
    "object dtype": lambda path: _save(path, np.array([None, 1], dtype=object), pickle=True),
    "wrong shape": lambda path: _save(path, np.zeros((12, 8, 8), np.uint8)),
    "float pixels": lambda path: _save(path, np.zeros((12, 8, 8, 3), np.float64)),
    "a header claiming 10^12 images": lambda path: _save_header(path, (10**12, 8, 8, 3)),
    "images of no width": lambda path: _save(path, np.zeros((12, 0, 8, 3), np.uint8)),
    "a flipped pixel": lambda path: _overwrite(path, _pixel_offset(path, image=3), b"\x7f"),
    "damaged checksums": lambda path: _overwrite(path[:-4] + CHECKSUM_SUFFIX, 0, b"\0" * 16),
    "wrong checksums": lambda path: _save(path[:-4] + CHECKSUM_SUFFIX, np.zeros(12, np.uint32)),
}


def _is_image_file(name):
    return name.endswith(".npy") and not name.endswith(CHECKSUM_SUFFIX)


def _pixel_offset(path, image):
    """The offset of a byte inside image ``image`` of a thumbnail file."""
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        shape, _, _ = np.lib.format.read_array_header_1_0(handle)
        return handle.tell() + image * int(np.prod(shape[1:])) + 5


def _overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _save(path, array, pickle=False):
    if os.path.exists(path):
        os.remove(path)
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=pickle)


def _save_header(path, shape):
    os.remove(path)
    with open(path, "wb") as handle:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 100)


def _fit_run(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(8, 2))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    return t.logger.log_dir


def _legacy_run(tmp_path):
    """A run as logs before 0.2 held it (raw .npy thumbnails), at tmp_path/logs/legacy."""
    from event_surgery import with_legacy_thumbnails

    source = _fit_run(tmp_path / "source")
    with_legacy_thumbnails(source, tmp_path / "logs" / "legacy")
    return str(tmp_path / "logs" / "legacy")


@pytest.fixture()
def served(tmp_path):
    """A run with the thumbnails of logs before 0.2 (raw .npy), and the file of 'ind'."""
    run_dir = _legacy_run(tmp_path)
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    (name,) = [n for n in os.listdir(folder) if n.startswith("ind-") and _is_image_file(n)]
    return run_dir, os.path.join(folder, name), lambda: plugin_client(tmp_path / "logs")


@pytest.mark.fault
@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_thumbnail_files_answer_json_with_the_cause(served, damage, tmp_path):
    run_dir, path, client = served
    DAMAGED[damage](path)
    _refused_everywhere(run_dir, client(), "legacy", tmp_path / "export")


def _refused_everywhere(run_dir, client, run, export_dir):
    """The thumbnails of 'ind' are a 404 JSON in words, a KeyError in read_log and an
    ExportError in export."""
    from deephys_lightning.export import ExportError, export_step

    response = client.get(f"/data/plugin/deephys/thumbnail?run={run}&dataset=ind&index=3")
    assert response.status_code == 404, response.data[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert "thumbnails of 'ind'" in response.json["error"]
    with pytest.raises(KeyError, match="thumbnails of 'ind'"):
        read_log(run_dir).thumbnails("ind")
    with pytest.raises(ExportError, match="dataset 'ind'"):
        export_step(run_dir, export_dir)


def _pack_head(path):
    """(header length, count, where the data starts) of a thumbnail pack."""
    import json
    import struct

    data = Path(path).read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    count = json.loads(data[12 : 12 + length])["count"]
    return length, count, 12 + length + 12 * count + 8


def _rewrite_header(path, **fields):
    import json
    import struct

    data = Path(path).read_bytes()
    length, _, _ = _pack_head(path)
    header = {**json.loads(data[12 : 12 + length]), **fields}
    raw = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(data[:8] + struct.pack("<I", len(raw)) + raw + data[12 + length :])


DAMAGED_PACKS = {
    "empty": lambda path: open(path, "wb").close(),
    "zeroed magic": lambda path: _overwrite(path, 0, b"\0" * 8),
    "a directory": lambda path: (os.remove(path), os.mkdir(path)),
    "a system file": lambda path: (os.remove(path), os.symlink("/etc/hostname", path)),
    "a header that is not JSON": lambda path: _overwrite(path, 12, b"{{{{"),
    "a header of 4 GiB": lambda path: _overwrite(path, 8, b"\xff\xff\xff\xff"),
    "a header claiming 10^12 images": lambda path: _rewrite_header(path, count=10**12),
    "images of no width": lambda path: _rewrite_header(path, shape=[8, 0, 3]),
    "an unknown format": lambda path: _rewrite_header(path, format="gif"),
    "a format that is a list": lambda path: _rewrite_header(path, format=["png"]),
    "a count of Infinity": lambda path: _rewrite_header(path, count=float("inf")),
    "images of 10^9 px": lambda path: _rewrite_header(path, shape=[10**9, 10**9, 3]),
    "cut short": lambda path: os.truncate(path, os.path.getsize(path) - 3),
    "offsets out of order": lambda path: _overwrite(
        path, _pack_head(path)[0] + 12 + 8 * 3, b"\0" * 8
    ),
    "a flipped byte in image 3": lambda path: _overwrite(
        path, _pack_head(path)[2] + _image_start(path, 3) + 2, b"\x7f"
    ),
}


def _image_start(path, index):
    length, count, _ = _pack_head(path)
    offsets = np.frombuffer(Path(path).read_bytes()[12 + length :][: 8 * (count + 1)], "<u8")
    return int(offsets[index])


@pytest.fixture()
def served_pack(tmp_path):
    """A run as this version writes it, and the thumbnail pack of 'ind'."""
    run_dir = _fit_run(tmp_path)
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    (name,) = [n for n in os.listdir(folder) if n.startswith("ind-")]
    return run_dir, os.path.join(folder, name), lambda: plugin_client(tmp_path)


@pytest.mark.fault
@pytest.mark.parametrize("damage", list(DAMAGED_PACKS))
def test_damaged_thumbnail_packs_answer_json_with_the_cause(served_pack, damage, tmp_path):
    run_dir, path, client = served_pack
    DAMAGED_PACKS[damage](path)
    _refused_everywhere(run_dir, client(), "tiny/version_0", tmp_path / "export")


@pytest.mark.fault
def test_a_thumbnail_pack_changed_while_served_is_an_error_never_a_crash(served_pack):
    """Served as stored (one ranged read, revalidated: no-cache, ETag); truncated in place,
    replaced by another pack, deleted: each is noticed on the next request."""
    run_dir, path, client = served_pack
    client = client()
    url = "/data/plugin/deephys/thumbnail?run=tiny/version_0&dataset=ind&index={}"
    pack = ThumbnailPack(path)
    first = client.get(url.format(11))
    assert first.status_code == 200 and first.headers["Content-Type"] == pack.media_type
    assert first.data == pack.encoded(11)  # the stored bytes, as they are
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["ETag"]
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 10)
    damaged = client.get(url.format(0))
    assert damaged.status_code == 404 and "damaged" in damaged.json["error"]
    other = np.full((12, 8, 8, 3), 200, np.uint8)
    with open(path + ".new", "wb") as handle:
        from deephys_lightning.writing import thumbnail_encoding

        handle.write(thumbnail_pack.pack(thumbnail_encoding.encode(other)[1], (8, 8, 3), "png"))
    os.replace(path + ".new", path)
    replaced = client.get(url.format(3))
    assert replaced.status_code == 200
    from PIL import Image

    assert np.asarray(Image.open(io.BytesIO(replaced.data))).min() == 200  # the new pixels
    os.remove(path)
    gone = client.get(url.format(3))
    assert gone.status_code == 404 and "deleted" in gone.json["error"]
