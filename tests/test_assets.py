"""Thumbnails live as asset files beside the events, read lazily and safely."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from tb_plugin import assets, metadata


def test_thumbnails_are_asset_files_not_event_payload(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    big = random_set(200, 1)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders={"a/b": loader(big, 50)})
    run_dir = t.logger.log_dir
    folder = os.path.join(run_dir, "plugins", "deephys", "thumbnails")
    (name,) = os.listdir(folder)  # one file: the set did not change between epochs
    assert name.startswith("a%2Fb-") and name.endswith(".npy")
    thumbs = np.load(os.path.join(folder, name))
    assert thumbs.shape == (200, 8, 8, 3)
    np.testing.assert_array_equal(read_log(run_dir).thumbnails("a/b"), thumbs)
    events = [f for f in os.listdir(run_dir) if f.startswith("events")]
    event_bytes = sum(os.path.getsize(os.path.join(run_dir, f)) for f in events)
    assert event_bytes < thumbs.nbytes * 2  # the events carry only a reference


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
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        assets.write_thumbnails(str(tmp_path), "set", np.zeros((3, 4, 4), np.uint8))
