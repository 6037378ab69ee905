"""Records written in the background: training goes on, fit returns with every record
on disk, failures reach the next hook, a killed writer leaves a run that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.writing import record_writer
from deephys_lightning.writing.background import Background

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
ROOT = os.path.dirname(os.path.dirname(SUPPORT))


def test_one_job_at_a_time_and_its_error_handed_back():
    background = Background()
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(10)
        raise OSError("No space left on device")

    background.submit(job)
    assert started.wait(10) and background.busy
    with pytest.raises(RuntimeError, match="in flight"):
        background.submit(lambda: None)
    release.set()
    outcome = background.wait()
    assert isinstance(outcome.error, OSError) and outcome.value is None
    assert background.wait() is None and not background.busy


class Gate(TinyNet):
    """The first training step after the first record: waits until that record's
    writing has begun, then says it ran (``stepped``)."""

    writing = threading.Event()
    stepped = threading.Event()

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1 and not self.stepped.is_set():
            self.writing.wait(timeout=30)
            self.stepped.set()
        return super().training_step(batch, batch_idx)


def test_training_goes_on_while_a_record_is_written(tmp_path, monkeypatch):
    """The first record's writer waits for a training step of the next epoch: it comes
    only if training goes on while the record is written (else a 30 s time-out)."""
    computing, writing = record_writer.record_view, record_writer.write_view
    waited = []

    def begins(*args, **kwargs):
        Gate.writing.set()
        return computing(*args, **kwargs)

    def after_a_training_step(*args, **kwargs):
        if not waited:
            waited.append(Gate.stepped.wait(timeout=30))
        return writing(*args, **kwargs)

    monkeypatch.setattr(record_writer, "record_view", begins)
    monkeypatch.setattr(record_writer, "write_view", after_a_training_step)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    t.fit(Gate(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert waited == [True]  # the first record was written while the next epoch trained
    assert read_log(t.logger.log_dir).steps == (3, 6)  # and fit returned with both


def test_read_log_right_after_fit_sees_the_last_record(tmp_path, monkeypatch):
    real = record_writer.write_view

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(record_writer, "write_view", slow)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=3)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert read_log(t.logger.log_dir).steps == (3, 6, 9)
    t.validate(TinyNet(), dataloaders=loader(random_set(5, 1)))
    assert read_log(os.path.join(t.logger.log_dir, "validate_step9")).steps == (9,)


def test_a_failure_in_the_background_is_reported_by_the_next_hook(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record_writer, "write_view", fails)
    t = trainer(tmp_path, [DeephysCallback(layer="fc", strict=True)], max_epochs=3)
    model = TinyNet()
    with pytest.raises(OSError, match="No space left"):
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert t.current_epoch == 1  # raised when the second recorded epoch collected it


KILLED_FIT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {support!r})
    from lightning.pytorch.callbacks import ModelCheckpoint
    from tiny_model import TinyNet, loader, random_set, trainer
    from deephys_lightning import DeephysCallback
    from deephys_lightning.writing import record_writer

    from tensorboard_plugin_deephys.log import step_pack

    real, marker, where = record_writer.write_view, {marker!r}, {where!r}
    real_pack = step_pack.write_pack

    def stalls_at_step_6(sink, view, **kwargs):
        if view.record.step == 6 and where == "before the pack":
            open(marker, "w").close()
            time.sleep(600)  # killed here, in the middle of the write
        return real(sink, view, **kwargs)

    def stalls_after_pack_6(run_dir, record, arrays, documents):
        written = real_pack(run_dir, record, arrays, documents)
        if record.step == 6 and where == "between the pack and its event":
            open(marker, "w").close()
            time.sleep(600)  # killed with the pack written, its event not
        return written

    record_writer.write_view = stalls_at_step_6
    step_pack.write_pack = stalls_after_pack_6
    checkpoints = ModelCheckpoint({checkpoints!r}, save_top_k=-1, every_n_epochs=1)
    t = trainer({root!r}, [DeephysCallback(layer="fc"), checkpoints], max_epochs=3,
                enable_checkpointing=True)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    """
)


@pytest.mark.parametrize("where", ["before the pack", "between the pack and its event"])
def test_a_process_killed_during_a_background_write_resumes_cleanly(tmp_path, where):
    """Killed before step 6's pack, the step is lost; killed after it, before its one
    event (record, scalars, histograms), the step's arrays are there without its
    scalars. Either way the resumed fit writes no step twice, no scalar twice."""
    marker, checkpoints = str(tmp_path / "writing"), str(tmp_path / "checkpoints")
    script = KILLED_FIT.format(
        support=SUPPORT, marker=marker, checkpoints=checkpoints, root=str(tmp_path), where=where
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(marker) and process.poll() is None:
            assert time.monotonic() < deadline, "the write at step 6 never started"
            time.sleep(0.1)
        assert process.poll() is None, "the fit ended before the write at step 6"
        while not any("epoch=1" in name for name in _listed(checkpoints)):
            assert time.monotonic() < deadline, "training did not go on during the write"
            time.sleep(0.1)  # training goes on meanwhile: the checkpoint of epoch 1
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    run_dir = str(tmp_path / "tiny" / "version_0")
    kept = (3,) if where == "before the pack" else (3, 6)
    assert read_log(run_dir).steps == kept  # the record in flight is lost, no more
    (last,) = [n for n in _listed(checkpoints) if "epoch=1" in n]  # after step 6's hand-over
    same_run = TensorBoardLogger(str(tmp_path), name="tiny", version=0)
    resumed = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=4, logger=same_run)
    resumed.fit(
        TinyNet(),
        loader(random_set(12, 0)),
        val_dataloaders=loader(random_set(5, 1)),
        ckpt_path=os.path.join(checkpoints, last),
    )
    assert read_log(run_dir).steps == (*kept, 9, 12)  # no duplicate, none out of order
    accuracy = scalar_steps(run_dir, "deephys/dataset_0/accuracy")
    assert sorted(accuracy) == [3, 9, 12]  # once each; none for step 6, whose event was lost


def scalar_steps(run_dir: str, tag: str) -> list[int]:
    """The steps of the scalar ``tag`` in ``run_dir``'s events, as written (repeats kept)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return [event.step for event in acc.Tensors(tag)] if tag in acc.Tags()["tensors"] else []


def _listed(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_a_failed_write_does_not_lose_the_records_after_it(tmp_path, monkeypatch):
    """TensorBoard's event writer keeps its first error for good: the failed record's
    event file is closed and the next record opens a new one."""
    from tensorboard.summary.writer import record_writer as tb_record_writer

    real, failures = tb_record_writer.RecordWriter.write, []

    def full_disk_once(self, data):
        ours = os.fsdecode(getattr(self._writer, "filename", b"")).endswith(".deephys")
        if ours and not failures:  # the callback's file only: the logger's is its own
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(tb_record_writer.RecordWriter, "write", full_disk_once)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=4)
    with pytest.warns(UserWarning, match="could not be written") as seen:
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert sum("could not be written" in str(w.message) for w in seen) == 1
    assert read_log(t.logger.log_dir).steps == (6, 9, 12)  # only the failed one is lost


class Fails(TinyNet):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("the model broke")
        return super().training_step(batch, batch_idx)


def test_an_exception_stops_the_record_in_flight_without_half_a_record(tmp_path, monkeypatch):
    import pickle

    from deephys_lightning.writing.summaries import RecordSink

    real = RecordSink.add_summary

    def slow(self, summary, step):
        time.sleep(0.5)  # a record of some fifty summaries: half a minute
        return real(self, summary, step)

    monkeypatch.setattr(RecordSink, "add_summary", slow)
    callback = DeephysCallback(layer="fc")
    t = trainer(tmp_path, [callback], max_epochs=3)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the model broke"):
        t.fit(Fails(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert time.monotonic() - start < 15  # stopped at its next summary, not written out
    with pytest.raises(ValueError, match="0 runs|no Deephys record"):
        read_log(t.logger.log_dir)  # no half record: its document is written last
    pickle.dumps(callback)  # no open event file left behind


def test_a_failure_that_stops_the_run_stops_every_process():
    """Rank zero's strict failure is broadcast: another rank raises too, in step."""
    from deephys_lightning.recording.gather import Collectives
    from deephys_lightning.writing.record_writer import RecordWriter, WriteSettings

    class Rank:
        global_rank = 1

    told = Collectives(None, lambda decision, src: True, world_size=2)  # rank zero failed
    with pytest.raises(RuntimeError, match="rank zero could not write the last record"):
        RecordWriter(WriteSettings(layers=("fc",), strict=True)).prepare(Rank(), None, told)
