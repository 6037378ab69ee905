"""The one thumbnail policy: when thumbnails travel to rank zero and when they are
written, unit by unit and under real Trainer runs."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from event_steps import tag_steps, thumbnail_steps
from tiny_model import TinyNet, loader, random_set, trainer
from torch.utils.data import Dataset

from deephys_lightning import DeephysCallback, read_log
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


# -- under real Trainer runs ------------------------------------------------------------


class _Mutable(Dataset):
    def __init__(self, base):
        self.x, self.y = base.tensors[0].clone(), base.tensors[1]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _Change(L.Callback):
    def __init__(self, dataset):
        self.dataset = dataset

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0 and not trainer.sanity_checking:
            self.dataset.x = 1 - self.dataset.x  # new images from epoch 1 on


def test_thumbnails_are_written_once_per_dataset(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=3)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    log = read_log(t.logger.log_dir)
    assert len(log.steps) == 3
    from tensorboard_plugin_deephys.log.metadata import Kind, tag_name

    accumulator_tags = tag_steps(t.logger.log_dir)
    assert accumulator_tags[tag_name(Kind.THUMBNAILS, dataset="dataset_0")] == [log.steps[0]]
    assert accumulator_tags[tag_name(Kind.LABELS, dataset="dataset_0")] == list(log.steps)
    # thumbnails of a later step resolve to the one write
    assert log.thumbnails("dataset_0", log.steps[-1]).shape == (5, 8, 8, 3)


def test_a_reused_callback_writes_thumbnails_into_each_new_log(tmp_path):
    callback = DeephysCallback(layer="fc")
    for version in range(2):  # the logger closed by the first fit is not reused
        t = trainer(tmp_path, [callback], max_epochs=1)
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
        log = read_log(tmp_path / "tiny" / f"version_{version}")
        assert log.thumbnails("dataset_0").shape == (5, 8, 8, 3)
    state = callback.state_dict()["written"]
    assert len(state) == 2 and all(list(s["thumbnails"]) == ["dataset_0"] for s in state.values())


def test_thumbnails_are_written_again_only_when_images_change(tmp_path):
    changing = _Mutable(random_set(5, 1))
    deephys = DeephysCallback(layer="fc")
    t = trainer(tmp_path, [deephys, _Change(changing)], max_epochs=3)
    t.fit(
        TinyNet(),
        loader(random_set(12, 0)),
        val_dataloaders={"same": loader(random_set(4, 2)), "changing": loader(changing)},
    )
    log = read_log(t.logger.log_dir)
    assert thumbnail_steps(t.logger.log_dir, "same") == [3]
    assert thumbnail_steps(t.logger.log_dir, "changing") == [3, 6]
    expected = ((1 - random_set(5, 1).tensors[0]).permute(0, 2, 3, 1) * 255).round()
    np.testing.assert_array_equal(log.thumbnails("changing", 9), expected.to(torch.uint8).numpy())


def test_thumbnails_lost_to_a_failed_write_are_made_again(tmp_path, monkeypatch):
    from deephys_lightning.writing import record_writer

    real = record_writer.write_view
    calls = []

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(record_writer, "write_view", first_fails)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=3)
    with pytest.warns(UserWarning, match="could not be written"):
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    log = read_log(t.logger.log_dir)
    assert log.steps == (6, 9)
    assert log.thumbnails("dataset_0", 6).shape == (5, 8, 8, 3)  # made again at step 6
    assert thumbnail_steps(t.logger.log_dir, "dataset_0") == [6]


def test_refresh_thumbnails_keeps_every_epochs_but_writes_only_new_ones(tmp_path, monkeypatch):
    from deephys_lightning.writing import record_writer

    kept = []
    real = record_writer.recordings_from_rows

    def spy(rows_by_name, *args, **kwargs):
        kept.append(all(rows.thumbs is not None for rows in rows_by_name.values()))
        return real(rows_by_name, *args, **kwargs)

    monkeypatch.setattr(record_writer, "recordings_from_rows", spy)
    for refresh, expected in ((False, [True, False, False]), (True, [True, True, True])):
        kept.clear()
        t = trainer(
            tmp_path / str(refresh),
            [DeephysCallback(layer="fc", refresh_thumbnails=refresh)],
            max_epochs=3,
        )
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
        assert kept == expected  # the unchanged set's thumbnails cross to the host once
        assert thumbnail_steps(t.logger.log_dir, "dataset_0") == [3]  # written once


@pytest.mark.fault
def test_thumbnails_a_store_lost_are_noticed_and_written_again(tmp_path):
    """The run's thumbnail files deleted between two fits into it (a store that lost
    its objects): the resumed fit checks what its state says is there, says so, and
    writes them again, so that its steps show images."""
    import shutil

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    val = loader(random_set(5, 1))

    def fit(epochs: int, ckpt_path=None):
        t = trainer(
            tmp_path,
            [DeephysCallback(layer="fc"), ModelCheckpoint(dirpath=tmp_path / f"ckpt{epochs}")],
            logger=TensorBoardLogger(tmp_path, name="run", version=0),
            max_epochs=epochs,
            enable_checkpointing=True,
        )
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val, ckpt_path=ckpt_path)
        return t

    first = fit(1)
    run_dir = first.logger.log_dir
    shutil.rmtree(f"{run_dir}/plugins/deephys/thumbnails")
    (checkpoint,) = (tmp_path / "ckpt1").glob("*.ckpt")
    with pytest.warns(UserWarning, match="thumbnails of 'dataset_0' are no longer in"):
        fit(2, ckpt_path=str(checkpoint))
    log = read_log(run_dir)
    assert log.steps == (3, 6)
    assert thumbnail_steps(run_dir, "dataset_0") == [3, 6]
    assert log.thumbnails("dataset_0", 6).shape == (5, 8, 8, 3)
