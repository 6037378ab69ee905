"""Asset file names made from dataset names: bounded in bytes under UTF-8 and UTF-16,
distinct for distinct names, unchanged for the short names earlier logs hold."""

from __future__ import annotations

import hashlib
import os

import pytest

from tensorboard_plugin_deephys.log import metadata, storage
from tensorboard_plugin_deephys.log.storage import TMP_SUFFIX

DIGEST = "ab" * 16
# The longest name a writer derives from an asset name: a raw .npy file's checksums
# (<name>.crc32c.npy) through a local temporary file (<name>.<pid>-<8 hex>.tmp).
WORST_EXTRA = (
    len(".crc32c.npy") - len(metadata.NPY_SUFFIX) + len(".4194304-12345678") + len(TMP_SUFFIX)
)

NAMES = [
    "",
    "ind",
    "a" * 1000,
    "猫" * 1000,  # 3 UTF-8 bytes each
    "😀" * 300,  # 4 UTF-8 bytes, 2 UTF-16 units each
    "é" * 200,
    "a" * 118 + "猫",  # the cut falls inside the last character's escape
    "x." * 400,  # dots are escaped too
    "/" * 500,
    "a/../" * 100,
]


def _component_lengths(name: str) -> tuple[int, int]:
    return len(name.encode("utf-8")), len(name.encode("utf-16-le")) // 2


@pytest.mark.parametrize("dataset", NAMES, ids=range(len(NAMES)))
@pytest.mark.parametrize("suffix", [metadata.PACK_SUFFIX, metadata.NPY_SUFFIX])
def test_every_file_name_fits_a_path_component_and_is_accepted(dataset, suffix):
    relative = metadata.thumbnail_asset_name(dataset, DIGEST, suffix)
    part = metadata.asset_name_part(dataset)
    assert len(part) <= metadata.MAX_NAME_PART and part.isascii()
    assert ".." not in relative and "/" not in relative.split("/", 1)[1]
    file_name = relative.split("/")[-1]
    utf8, utf16 = _component_lengths(file_name)
    assert utf8 + WORST_EXTRA <= 255 and utf16 + WORST_EXTRA <= 255
    path = metadata.asset_path("s3://bucket/exp/run/version_0", relative)
    assert len(path.encode("utf-8")) < 1024 - 600  # room for a long prefix in S3's 1,024
    # The reader accepts what the writer makes.
    reference = metadata.ThumbnailReference(file=relative, count=1, shape=(2, 2, 3))
    assert metadata.ThumbnailReference.from_json(reference.to_json()) == reference


def test_short_names_are_escaped_as_before():
    # The names of earlier logs: percent-escaped UTF-8, "." as %2E, nothing cut.
    assert metadata.thumbnail_asset_name("cifar10.1/x", DIGEST) == (
        f"thumbnails/cifar10%2E1%2Fx-{DIGEST}.thumbs"
    )
    assert metadata.asset_name_part("猫") == "%E7%8C%AB"
    exact = "a" * metadata.MAX_NAME_PART
    assert metadata.asset_name_part(exact) == exact
    assert metadata.asset_name_part("猫" * 13) == "%E7%8C%AB" * 13  # 117 bytes


def test_a_long_name_keeps_a_readable_prefix_of_whole_characters_and_a_hash():
    part = metadata.asset_name_part("imagenet-r/" + "x" * 500)
    assert part.startswith("imagenet-r%2Fxxxx")
    prefix, digest = part.rsplit(".", 1)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert "." not in prefix
    cjk = metadata.asset_name_part("a" * 80 + "猫" * 100)
    prefix = cjk.rsplit(".", 1)[0]
    assert prefix.startswith("a" * 80) and (len(prefix) - 80) % 9 == 0  # no escape cut


def test_different_long_names_never_share_a_file():
    base = "a" * 1000
    variants = [base, base + "b", base[:-1] + "b", "b" + base[1:], base[:500], base * 2]
    variants += ["猫" * 1000, "猫" * 999 + "犬", "a" * 119 + "猫", "a" * 119 + "犬"]
    parts = [metadata.asset_name_part(name) for name in variants]
    assert len(set(parts)) == len(variants)
    # A hashed part ends in "." and 32 hex digits; escaped names never hold a "."
    # so no short name ever equals a long name's part.
    assert all("." not in metadata.asset_name_part(name) for name in ("a.b", ".", "..", "x" * 5))


def test_the_part_is_the_same_in_every_process():
    # Names are made again by a resumed fit: no per-process salt (hash() is salted).
    assert metadata.asset_name_part("a" * 1000) == (
        "a" * 87 + "." + hashlib.blake2b(b"a" * 1000, digest_size=16).hexdigest()
    )


def test_a_long_name_writes_a_file_the_local_disk_accepts(tmp_path):
    for dataset in ("猫" * 1000, "😀" * 300, "a" * 1000):
        relative = metadata.thumbnail_asset_name(dataset, DIGEST, metadata.NPY_SUFFIX)
        path = metadata.asset_path(str(tmp_path), relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        storage.write_bytes(path[: -len(metadata.NPY_SUFFIX)] + ".crc32c.npy", b"x")
        storage.write_bytes(path, b"x")
        assert storage.read_bytes(path) == b"x"
