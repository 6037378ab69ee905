"""The one thumbnail policy: when thumbnails travel to rank zero and when they are
written, unit by unit and under real Trainer runs."""

from __future__ import annotations

import numpy as np
import torch

from deephys_lightning.writing.log_state import LogState
from deephys_lightning.writing.thumbnail_policy import ThumbnailPolicy
from tensorboard_plugin_deephys.log.assets import Thumbnails

PRINTS = torch.tensor([0.5, 1.5, -2.0])


def _held(tmp_path, thumbnails=None, last_step=-1) -> LogState:
    return LogState(str(tmp_path), last_step=last_step, thumbnails=dict(thumbnails or {}))


def test_first_epoch_of_a_call_is_due_then_only_changed_images(tmp_path):
    policy = ThumbnailPolicy()
    held = _held(tmp_path)
    assert policy.due("ind", PRINTS, held, step=3)  # nothing written in this call yet
    held.thumbnails["ind"] = "digest"
    held.last_step = 3
    policy.written()
    assert not policy.due("ind", PRINTS.clone(), held, step=6)  # the same inputs
    assert policy.due("ind", PRINTS + 1, held, step=6)  # other inputs
    policy.new_call()  # a new fit / validate / test call keeps them once again
    assert policy.due("ind", PRINTS, held, step=9)


def test_a_failed_write_keeps_them_due(tmp_path):
    policy = ThumbnailPolicy()
    held = _held(tmp_path, {"ind": "digest"}, last_step=3)
    assert policy.due("ind", PRINTS, held, step=3)
    policy.discard()  # the record did not reach the log
    assert policy.due("ind", PRINTS, held, step=6)


def test_a_destination_that_lacks_them_or_an_earlier_step_makes_them_due(tmp_path):
    policy = ThumbnailPolicy()
    policy.due("ind", PRINTS, None, step=3)
    policy.written()
    assert policy.due("ind", PRINTS, _held(tmp_path), step=6)  # the run lacks them
    elsewhere = _held(tmp_path, {"ind": "d"}, last_step=9)
    assert policy.due("ind", PRINTS, elsewhere, step=6)  # the record goes to its own run
    assert not policy.due("ind", PRINTS, _held(tmp_path, {"ind": "d"}, last_step=3), step=6)


def test_refresh_and_missing_fingerprints_are_always_due(tmp_path):
    held = _held(tmp_path, {"ind": "d"}, last_step=3)
    refresh = ThumbnailPolicy(refresh=True)
    refresh.due("ind", PRINTS, held, 3)
    refresh.written()
    assert refresh.due("ind", PRINTS, held, 6)
    policy = ThumbnailPolicy()
    policy.due("ind", PRINTS, held, 3)
    policy.written()
    assert policy.due("ind", None, held, 6)  # no fingerprints: cannot tell


def test_thumbnails_are_written_only_under_a_new_digest(tmp_path):
    pixels = torch.from_numpy(np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3))
    held = _held(tmp_path)
    made = ThumbnailPolicy.to_write("ind", pixels, held)
    assert isinstance(made, Thumbnails) and made.digest == Thumbnails.of(pixels.numpy()).digest
    held.thumbnails["ind"] = made.digest
    assert ThumbnailPolicy.to_write("ind", pixels, held) is None  # the run has these
    assert ThumbnailPolicy.to_write("ind", pixels + 1, held) is not None
    assert ThumbnailPolicy.to_write("ind", None, held) is None  # none travelled
