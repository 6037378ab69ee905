"""A thumbnail pack holds the images its name says, or is refused: another set's or
another training's pack with the same image count put in its place (in place, by a
rename, on S3) is a 404 JSON naming the run, the dataset and the cause, a KeyError
in read_log and a refusal of export (exit 2) — never the wrong images. And the
thumbnail route's caching: cacheable only under a content-addressed URL
(``digest=``), otherwise ``no-cache`` with an ETag, and 304 to ``If-None-Match``."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from cli_run import deephys_command
from PIL import Image
from plugin_client import plugin_client
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import ExportError, export_step
from tensorboard_plugin_deephys.log import thumbnail_pack
from tensorboard_plugin_deephys.log.thumbnail_pack import FOREIGN, ThumbnailPack

RUN = "tiny/version_0"
URL = "/data/plugin/deephys/thumbnail"


def _fit(root, ind_seed=1, ood_seed=2, epochs=1):
    """A run whose two sets hold the same number of images (12), of other pixels."""
    t = trainer(root, [DeephysCallback(layer="fc")], max_epochs=epochs)
    val = {"ind": loader(random_set(12, ind_seed)), "ood": loader(random_set(12, ood_seed))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    return t.logger.log_dir


def _pack_of(run_dir, dataset):
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    (name,) = [n for n in os.listdir(folder) if n.startswith(f"{dataset}-")]
    return os.path.join(folder, name)


@pytest.fixture()
def two_sets(tmp_path):
    run_dir = _fit(tmp_path)
    return run_dir, _pack_of(run_dir, "ind"), _pack_of(run_dir, "ood")


def _refused(run_dir, logdir, export_dir, run=RUN):
    """The thumbnails of 'ind' are refused everywhere, in words naming the cause."""
    response = plugin_client(logdir).get(f"{URL}?run={run}&dataset=ind&index=3")
    assert response.status_code == 404, response.data[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json["error"]
    assert f"run {run!r}" in error and "thumbnails of 'ind'" in error and FOREIGN in error
    with pytest.raises(KeyError, match=FOREIGN):
        read_log(run_dir).thumbnails("ind")
    with pytest.raises(ExportError, match=f"dataset 'ind'.*{FOREIGN}"):
        export_step(run_dir, export_dir)
    return error


def _swap_in_place(source, target):
    """``target``'s bytes overwritten by ``source``'s (cp over it: same inode)."""
    data = Path(source).read_bytes()
    with open(target, "r+b") as handle:
        handle.write(data)
        handle.truncate(len(data))


def _swap_by_rename(source, target):
    shutil.copyfile(source, target + ".new")
    os.replace(target + ".new", target)


@pytest.mark.fault
@pytest.mark.parametrize("swap", [_swap_in_place, _swap_by_rename], ids=["in place", "rename"])
def test_another_sets_pack_in_its_place_is_refused(two_sets, swap, tmp_path):
    run_dir, ind, ood = two_sets
    assert ThumbnailPack(ind).checked_on_open and len(ThumbnailPack(ood)) == 12
    swap(ood, ind)
    error = _refused(run_dir, tmp_path, tmp_path / "export")
    assert "write the thumbnails again" in error
    cli = deephys_command("export", run_dir, str(tmp_path / "cli"))
    assert cli.returncode == 2 and FOREIGN in cli.stderr, cli.stderr
    assert not (tmp_path / "cli").exists() or not list((tmp_path / "cli").iterdir())


@pytest.mark.fault
def test_another_trainings_pack_in_its_place_is_refused(two_sets, tmp_path):
    run_dir, ind, _ = two_sets
    other = _fit(tmp_path / "other", ind_seed=7)
    _swap_by_rename(_pack_of(other, "ind"), ind)
    _refused(run_dir, tmp_path, tmp_path / "export")


@pytest.mark.fault
def test_a_pack_swapped_while_served_is_refused_on_the_next_request(two_sets, tmp_path):
    run_dir, ind, ood = two_sets
    client = plugin_client(tmp_path)
    first = client.get(f"{URL}?run={RUN}&dataset=ind&index=3")
    assert first.status_code == 200 and first.data == ThumbnailPack(ind).encoded(3)
    _swap_by_rename(ood, ind)
    again = client.get(f"{URL}?run={RUN}&dataset=ind&index=3")  # the cached reader notices
    assert again.status_code == 404 and FOREIGN in again.json["error"]
    assert f"run {RUN!r}" in again.json["error"] and "'ind'" in again.json["error"]


def _header_and_rest(path):
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + length]), data[12 + length :]


def _with_header(path, header, rest):
    raw = json.dumps(header).encode()
    Path(path).write_bytes(thumbnail_pack.MAGIC + struct.pack("<I", len(raw)) + raw + rest)


@pytest.mark.fault
def test_an_index_that_does_not_match_its_header_is_refused(two_sets, tmp_path):
    """The ood pack's index under the ind pack's header (a mixed-up copy)."""
    run_dir, ind, ood = two_sets
    header, _ = _header_and_rest(ind)
    _, rest = _header_and_rest(ood)
    _with_header(ind, header, rest)
    error = _refused(run_dir, tmp_path, tmp_path / "export")
    assert "its index does not match" in error


@pytest.mark.fault
@pytest.mark.parametrize(
    "fields", [{"digest": None}, {"index_digest": None}, {"digest": "xyz"}, {"digest": 5}]
)
def test_a_damaged_content_digest_in_the_header_is_refused(two_sets, fields, tmp_path):
    run_dir, ind, _ = two_sets
    header, rest = _header_and_rest(ind)
    _with_header(ind, {**header, **fields}, rest)
    response = plugin_client(tmp_path).get(f"{URL}?run={RUN}&dataset=ind&index=3")
    assert response.status_code == 404 and "thumbnails of 'ind'" in response.json["error"]
    with pytest.raises(ExportError, match="dataset 'ind'"):
        export_step(run_dir, tmp_path / "export")


def _as_old_pack(path):
    """The pack rewritten as the first 0.2 versions wrote it: no content digest."""
    header, _ = _header_and_rest(path)
    pack = ThumbnailPack(path)
    encoded = [pack.encoded(i) for i in range(len(pack))]
    data = thumbnail_pack.pack(encoded, header["shape"], header["format"])
    Path(path).write_bytes(data)


def test_old_packs_without_a_digest_are_still_served_and_exported(two_sets, tmp_path):
    run_dir, ind, _ = two_sets
    expected = read_log(run_dir).thumbnails("ind")
    _as_old_pack(ind)
    assert "digest" not in _header_and_rest(ind)[0] and not ThumbnailPack(ind).checked_on_open
    response = plugin_client(tmp_path).get(f"{URL}?run={RUN}&dataset=ind&index=3")
    assert response.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.data))), expected[3])
    np.testing.assert_array_equal(read_log(run_dir).thumbnails("ind"), expected)
    export_step(run_dir, tmp_path / "export")


@pytest.mark.fault
def test_an_old_png_pack_of_another_set_is_served_but_never_exported(two_sets, tmp_path):
    """Without a digest in its header a pack cannot be checked on opening; read whole
    (export, read_log) a PNG pack's decoded pixels are hashed against the name."""
    run_dir, ind, ood = two_sets
    _as_old_pack(ood)
    _swap_by_rename(ood, ind)
    served = plugin_client(tmp_path).get(f"{URL}?run={RUN}&dataset=ind&index=3")
    assert served.status_code == 200  # as well as possible: the count matches
    with pytest.raises(KeyError, match=FOREIGN):
        read_log(run_dir).thumbnails("ind")
    with pytest.raises(ExportError, match=FOREIGN):
        export_step(run_dir, tmp_path / "export")


# -- caching ---------------------------------------------------------------------------


def test_thumbnails_are_cached_only_under_their_content_digest(two_sets, tmp_path):
    run_dir, ind, _ = two_sets
    digest = thumbnail_pack.name_digest(ind)
    client = plugin_client(tmp_path)
    plain = client.get(f"{URL}?run={RUN}&dataset=ind&index=3")
    assert plain.status_code == 200
    assert plain.headers["Cache-Control"] == "no-cache"
    assert plain.headers["ETag"] == f'"{digest}-3"'
    named = client.get(f"{URL}?run={RUN}&dataset=ind&index=3&digest={digest}")
    assert named.status_code == 200 and named.data == plain.data
    assert (
        "max-age" in named.headers["Cache-Control"]
        and named.headers["ETag"] == plain.headers["ETag"]
    )
    for url in (
        f"{URL}?run={RUN}&dataset=ind&index=3",
        f"{URL}?run={RUN}&dataset=ind&index=3&digest={digest}",
    ):
        again = client.get(url, headers={"If-None-Match": plain.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["ETag"] == plain.headers["ETag"]
    weak = client.get(
        f"{URL}?run={RUN}&dataset=ind&index=3", headers={"If-None-Match": f'W/"{digest}-3"'}
    )
    assert weak.status_code == 304
    other_index = client.get(
        f"{URL}?run={RUN}&dataset=ind&index=4", headers={"If-None-Match": plain.headers["ETag"]}
    )
    assert other_index.status_code == 200 and other_index.headers["ETag"] == f'"{digest}-4"'
    stale = client.get(f"{URL}?run={RUN}&dataset=ind&index=3&digest={'0' * 32}")
    assert stale.status_code == 404 and stale.headers["Content-Type"].startswith("application/json")
    assert digest in stale.json["error"] and "changed" in stale.json["error"]
    bad = client.get(f"{URL}?run={RUN}&dataset=ind&index=3&digest=../x")
    assert bad.status_code == 400 and "digest" in bad.json["error"]
    beyond = client.get(f"{URL}?run={RUN}&dataset=ind&index=99", headers={"If-None-Match": "*"})
    assert beyond.status_code == 400  # the index is checked before any 304


def test_training_again_into_the_same_version_is_not_served_stale(tmp_path):
    """The issue's case: the browser revalidates with the ETag it holds; after another
    training into the same run directory (other images) and a restart, it gets the
    new images, not a 304."""
    from lightning.pytorch.loggers import TensorBoardLogger

    run_dir = _fit(tmp_path)
    first = plugin_client(tmp_path).get(f"{URL}?run={RUN}&dataset=ind&index=3")
    etag = first.headers["ETag"]
    logger = TensorBoardLogger(str(tmp_path), name="tiny", version=0)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=3, logger=logger)
    val = {"ind": loader(random_set(12, 9)), "ood": loader(random_set(12, 2))}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    assert t.logger.log_dir == run_dir
    restarted = plugin_client(tmp_path)  # a new TensorBoard, the browser's old ETag
    again = restarted.get(f"{URL}?run={RUN}&dataset=ind&index=3", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["ETag"] != etag
    latest = read_log(run_dir).thumbnails("ind")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(again.data))), latest[3])
    assert first.data != again.data
