"""Rank zero's writer of records: destinations, log state, event sinks, failures.

Training never waits for a record: :meth:`RecordWriter.write` hands the gathered
epoch to a writer thread (``background.Background``, one record in flight) and
returns; the next recorded epoch, ``teardown`` and ``on_exception`` collect it
(:meth:`RecordWriter.wait`), so ``fit``, ``validate`` and ``test`` return with
every record on disk. Failures are reported by the hook that collects them.

A :class:`RecordWriter` decides where an epoch's record goes (the logger's run
directory, a new ``version_N``, or a run of its own for an evaluation at a step the
run holds), what that directory holds already (``LogState``), which thumbnails are
written (``ThumbnailPolicy``), and what a failure does (a warning once per cause,
training goes on; ``strict`` raises). It computes the record's view data
(``view_data``), then writes it (``events.write_view``) through an event file of its
own: TensorBoard's public ``EventFileWriter``, never the logger's writer, so that a
failed write is the callback's to report and the logger's file is left alone.

Example::

    writer = RecordWriter(WriteSettings(layers=("fc1",)))
    writer.setup(trainer)
    writer.begin(trainer, plan)                  # at the epoch's start
    writer.prepare(trainer, plan)                # its end: the record in flight is collected
    ...                                          # gathering; writer.thumbnails_due(...)
    writer.write(trainer, plan, epoch_rows)      # rank zero hands it over, all return
    writer.close()                               # teardown: waits for it
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from deephys_lightning import event_files, fast_crc
from deephys_lightning.recording import rows as columns
from deephys_lightning.recording.gather import Collectives
from deephys_lightning.recording.plan import EpochPlan
from deephys_lightning.recording.recorder import EpochRows
from deephys_lightning.recording.rows import Rows
from deephys_lightning.writing import destinations
from deephys_lightning.writing.background import Background
from deephys_lightning.writing.events import write_view
from deephys_lightning.writing.log_state import LogState
from deephys_lightning.writing.summaries import EventFileSink, RecordCancelled
from deephys_lightning.writing.thumbnail_policy import ThumbnailPolicy
from deephys_lightning.writing.view_data import (
    DatasetRecording,
    RecordView,
    class_names_for,
    record_view,
    recordings_from_rows,
)
from tensorboard_plugin_deephys.log import assets, storage
from tensorboard_plugin_deephys.log.metadata import Record


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    """What a record holds and how failures are met (the callback's options)."""

    layers: Sequence[str]
    top_k: int = 32
    relu: bool = True
    thumbnails: bool = True
    refresh_thumbnails: bool = False
    max_images: int | None = None
    detectors: tuple[str, ...] = ()
    scalars: bool = True
    histograms: bool = True
    strict: bool = False


class RecordWriter:
    """Writes recorded epochs (see the module docstring)."""

    def __init__(self, settings: WriteSettings) -> None:
        self.settings = settings
        self.thumbnail_policy = ThumbnailPolicy(settings.refresh_thumbnails)
        # What each log directory written to holds (a reused callback may write to several).
        self.log_states: dict[str, LogState] = {}
        self._scanned: set[str] = set()  # directories whose events were scanned for steps
        self._sinks: dict[str, EventFileSink] = {}  # our event files, by directory
        # Without a logger that has a directory: the version directory claimed for this
        # callback's records (kept across its fit, validate and test calls).
        self._own_log_dir: str | None = None
        self._warned: set[str] = set()
        self._destination = ""  # this epoch's log directory
        self._held: LogState | None = None  # what it holds (rank zero, with thumbnails)
        self._background = Background()
        self._cancel = threading.Event()  # set: the record in flight stops (an exception)
        self._in_flight: tuple[int, str] = (0, "")  # (step, directory) of the record
        self._lock = threading.Lock()  # the log states, shared with the writer thread

    def __getstate__(self) -> dict[str, Any]:
        """Without the lock and the writer thread (``ddp_spawn`` pickles callbacks):
        a new process starts with its own."""
        state = self.__dict__.copy()
        del state["_lock"], state["_background"], state["_cancel"]
        state["_sinks"] = {}  # open event files stay with their process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._background = Background()
        self._cancel = threading.Event()

    # -- the callback's calls ----------------------------------------------------------

    def setup(self, trainer: pl.Trainer) -> None:
        """A ``fit``, ``validate`` or ``test`` call begins."""
        self.thumbnail_policy.new_call()
        if trainer.loggers and destinations.tensorboard_logger(trainer) is None:
            where = destinations.logger_dir(trainer)
            rank_zero_warn(
                "DeephysCallback writes TensorBoard events, and this Trainer has no "
                "TensorBoardLogger: its event file goes to "
                + (
                    f"the logger's directory {where!r}"
                    if where
                    else f"a new lightning_logs/version_N under {trainer.default_root_dir!r}"
                )
                + " (tensorboard --logdir on its parent shows it). Add a TensorBoardLogger "
                "to keep them beside your training curves."
            )

    def begin(self, trainer: pl.Trainer, plan: EpochPlan) -> None:
        """An epoch of ``plan`` starts: find its destination."""
        self._destination = self._log_dir(trainer)

    def prepare(self, trainer: pl.Trainer, plan: EpochPlan, collectives: Collectives) -> None:
        """A recorded epoch ends: collect the record in flight, then (rank zero) read
        what the destination holds, once, for the thumbnail decisions. A failure that
        stops the run (``strict``, a misconfiguration) stops every process together:
        rank zero raises it, the others say so."""
        failure = self._collect()
        if collectives.decision(failure is not None):
            raise failure or RuntimeError(
                "DeephysCallback: rank zero could not write the last record and stops the "
                "run (strict=True, or a misconfiguration): see its error."
            )
        self._held = None
        if self.settings.thumbnails and trainer.global_rank == 0:
            self._held = self.log_state(self._destination)
            lost = self._held.forget_lost_thumbnails()
            if lost:  # saved, so that the state read again before writing agrees
                try:
                    self._held.save()
                except Exception as error:  # the record's own write will say more
                    rank_zero_warn(f"DeephysCallback: cannot update the run's state: {error}")
            for name in lost:
                rank_zero_warn(
                    f"DeephysCallback: the thumbnails of {name!r} are no longer in "
                    f"{self._destination} (deleted, or the store lost them): they are "
                    "written again with this record."
                )

    def thumbnails_due(self, plan: EpochPlan, name: str, rows: Rows | None) -> bool:
        """Whether the thumbnails of ``name`` travel this epoch (rank zero's view)."""
        fingerprints = None if rows is None else rows.get(columns.FINGERPRINTS)
        return self.thumbnail_policy.due(name, fingerprints, self._held, plan.position[0])

    def write(self, trainer: pl.Trainer, plan: EpochPlan, epoch: EpochRows) -> None:
        """Hand the epoch's record to the writer thread (rank zero) and return."""
        if not epoch.rows or trainer.global_rank != 0:
            self.thumbnail_policy.discard()
            return
        self._in_flight = (plan.position[0], self._destination)
        self._background.submit(lambda: self._write(plan, epoch))

    def wait(self) -> None:
        """Collect the record in flight, if any: a failure warns once per cause (or
        raises with ``strict``, and for a misconfiguration), and training goes on."""
        failure = self._collect()
        if failure is not None:
            raise failure

    def _collect(self) -> BaseException | None:
        """Collect the record in flight: warn about a failure once per cause and
        return None, or return the failure that stops the run (``strict``, a
        misconfiguration, an interrupt). Only thumbnails that reached the log count as
        made: a failed or skipped write keeps them due at the next recorded epoch. A
        failed write also closes the event files of our own: TensorBoard's writer
        keeps its first error for good, and the next record opens a new file."""
        outcome = self._background.wait()
        if outcome is None:
            return None
        if outcome.error is None and outcome.value:
            self.thumbnail_policy.written()
            return None
        self.thumbnail_policy.discard()
        error = outcome.error
        if error is None:
            return None
        self._close_sinks()
        if isinstance(error, MisconfigurationException) or self.settings.strict:
            return error
        if not isinstance(error, Exception):
            return error  # KeyboardInterrupt and the like
        step, destination = self._in_flight
        self._warn_once(
            _cause(error),
            f"DeephysCallback: the record at step {step} could not be written to "
            f"{destination} ({type(error).__name__}: {error}). Training goes on without it; "
            "check that the log directory is writable and has free space, or pass "
            "DeephysCallback(strict=True) to stop on such errors.",
        )
        return None

    def close(self) -> None:
        """Wait for the record in flight, then close the event files of our own (a
        later record opens new ones)."""
        try:
            self.wait()
        finally:
            self._close_sinks()

    def abandon(self) -> None:
        """After an exception (an interrupt too): stop the record in flight at its
        next summary (its record document, written last, is not written: no half
        record), report it as a warning only (the run has failed already), and close
        the event files."""
        if self._background.busy:
            rank_zero_info(
                f"DeephysCallback: stopping the record at step {self._in_flight[0]} that "
                "was being written"
            )
            self._cancel.set()
        try:
            failure = self._collect()
        finally:
            self._cancel.clear()
            self._close_sinks()
        if failure is not None and not isinstance(failure, RecordCancelled):
            rank_zero_warn(f"DeephysCallback: the last record was not written ({failure})")

    def _close_sinks(self) -> None:
        for sink in self._sinks.values():
            # A writer that failed keeps its error for good: it was said already.
            with contextlib.suppress(Exception):
                sink.close()
        self._sinks = {}

    def log_state(self, log_dir: str) -> LogState:
        """What ``log_dir`` holds: this process's knowledge merged with the saved state
        and, once per directory and process, the steps its events hold."""
        on_disk = LogState.load(log_dir)
        if log_dir not in self._scanned:
            # state.json (and a checkpoint's copy) is a fast path: the steps the events
            # hold count, even with that file lost or damaged (a light scan of the run's
            # own record events).
            on_disk.add_found(event_files.recorded_steps(log_dir))
            for path in assets.remove_stale_temporaries(log_dir):
                rank_zero_info(f"DeephysCallback: removed {path}, left by an interrupted write")
            self._scanned.add(log_dir)
        with self._lock:
            state = self.log_states.get(log_dir)
            if state is None:
                state = self.log_states[log_dir] = on_disk
            else:
                state.merge(on_disk)
        return state

    # -- rank zero's record ----------------------------------------------------------------

    def _write(self, plan: EpochPlan, epoch: EpochRows) -> bool:
        """Write the epoch's record (on the writer thread); True when it reached the log."""
        settings = self.settings
        started = time.perf_counter()
        step, epoch_number = plan.position
        log_dir = self._in_flight[1]
        state = self.log_state(log_dir)
        holder = state.holder(step)
        if holder == "fit" and plan.stage == "fit":  # a resumed fit validating again
            rank_zero_warn(
                f"DeephysCallback: {log_dir} already holds this fit's record at step {step} "
                "(a fit resumed from an earlier checkpoint into the same logger version?); "
                "it is kept and this validation is not recorded again. Log to a new version "
                "(a new TensorBoardLogger) to record it."
            )
            return False
        if step <= state.last_step:
            # Held, or before the run's last step (TensorBoard's Rust loader drops a
            # run's later steps after an earlier one): a run of its own beside it.
            log_dir = destinations.evaluation_dir(log_dir, plan.stage, step)
            state = self.log_state(log_dir)
            held = f"a {holder} record at step {step}" if holder else f"steps up to {step}"
            rank_zero_info(
                f"DeephysCallback: {self._in_flight[1]} already holds {held}; this "
                f"{plan.stage} record goes to the run {log_dir}"
            )
        names, order = plan.names, plan.order
        if order[0] not in epoch.rows:
            rank_zero_warn(
                f"DeephysCallback: the in-distribution set {names[order[0]]!r} recorded no "
                f"images at step {step}, so nothing is recorded: every score compares the "
                "other sets with it."
            )
            return False
        for idx in order:
            if idx not in epoch.rows:
                rank_zero_warn(
                    f"DeephysCallback: {names[idx]!r} recorded no images at step {step}; it "
                    "is left out of this record."
                )
        rows_by_name = {names[idx]: epoch.rows[idx] for idx in order if idx in epoch.rows}
        thumbnails = {
            name: self.thumbnail_policy.to_write(name, rows.thumbs, state)
            for name, rows in rows_by_name.items()
        }
        recordings = recordings_from_rows(
            rows_by_name,
            {names[idx]: found for idx, found in epoch.maps.items()},
            plan.keeps_logits,
            thumbnails,
        )
        if plan.class_names is not None:  # its labels were checked when gathered
            class_names = list(plan.class_names.names)
        else:
            class_names = class_names_for(epoch.num_classes, recordings)
        record = Record(
            step=step,
            epoch=epoch_number,
            layers=tuple(settings.layers),
            datasets=tuple(recordings),
            class_names=tuple(class_names),
            num_images={name: len(rec.labels) for name, rec in recordings.items()},
            top_k=settings.top_k,
            relu=settings.relu,
            stage=plan.stage,
            dataset_sizes={name: plan.dataset_sizes.get(name) for name in recordings},
        )
        reference = None
        if epoch.reference is not None and len(epoch.reference):
            reference = recordings_from_rows(
                {"reference": epoch.reference}, {}, lambda *_: True, {}
            )["reference"]
        with _side_stream(recordings):
            view = record_view(
                record,
                recordings,
                max_activation_bytes=plan.max_activation_bytes,
                detectors=settings.detectors,
                cancelled=self._cancel.is_set,
                reference=reference,
                heads=epoch.heads,
            )
        self._warn_about(view)
        write_view(
            self._sink(log_dir),
            view,
            log_dir=log_dir,
            scalars=settings.scalars,
            histograms=settings.histograms,
            cancelled=self._cancel.is_set,
        )
        with self._lock:
            state.add(step, plan.stage)
            state.thumbnails.update({name: t.digest for name, t in view.thumbnails.items()})
        images = sum(record.num_images.values())
        rank_zero_info(
            f"DeephysCallback: step {step} written to {log_dir} in "
            f"{time.perf_counter() - started:.2f} s ({len(record.datasets)} sets, "
            f"{images:,} images)"
        )
        try:
            state.save()
        except OSError as error:  # the record is complete: only the fast path is lost
            if settings.strict:
                raise
            self._warn_once(
                f"state: {_cause(error)}",
                f"DeephysCallback: the record at step {step} is written, but "
                f"{LogState.path(log_dir)} could not be saved ({type(error).__name__}: "
                f"{error}); nothing is lost: the steps are found in the events next time "
                "(unchanged thumbnails may be written again). Make the folder writable.",
            )
        return True

    def _warn_about(self, view: RecordView) -> None:
        """Say what is odd about a record's data: activations that are not finite, maps
        left out, a set recorded in part for another reason than ``max_images``."""
        for left in view.record.left_out:
            rank_zero_warn(
                f"DeephysCallback: step {view.record.step}: {left.describe()}. They stay in "
                "the record (the tab and `deephys-lightning scores` count them) but take no "
                "part in its statistics."
            )
        for note in view.notes:
            rank_zero_warn(note)
        record, max_images = view.record, self.settings.max_images
        for name in record.datasets:
            size = record.dataset_sizes.get(name)
            count = record.num_images[name]
            if size is not None and count < min(size, max_images or size):
                rank_zero_warn(
                    f"DeephysCallback: {count} of the {size} images of {name!r} were recorded "
                    "(limit_val_batches / limit_test_batches, or a dataloader that stops "
                    "early); the scores describe that part. The tab shows 'N of M images'."
                )

    # -- destinations and event files ------------------------------------------------------

    def _log_dir(self, trainer: pl.Trainer) -> str:
        """Where records go: the logger's run directory (the TensorBoardLogger's, else
        the first logger's ``log_dir``), else a new ``lightning_logs/version_N`` under
        ``default_root_dir``, claimed once by rank zero (other ranks write nothing)."""
        found = destinations.logger_dir(trainer)
        if found is not None:
            return found
        if self._own_log_dir is None and trainer.global_rank == 0:
            root = storage.join(storage.normalize(trainer.default_root_dir), "lightning_logs")
            self._own_log_dir = destinations.new_version_dir(root)
        return self._own_log_dir or ""

    def _sink(self, log_dir: str) -> EventFileSink:
        """The event file of our own in ``log_dir`` (opened on first use)."""
        if log_dir not in self._sinks:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            # Event framing at C speed, the same bytes (fast_crc checks both agree).
            fast_crc.install()
            if not storage.is_url(log_dir):
                os.makedirs(log_dir, exist_ok=True)
            writer = EventFileWriter(log_dir, filename_suffix=".deephys")
            self._sinks[log_dir] = EventFileSink(writer)
        return self._sinks[log_dir]

    def _warn_once(self, cause: str, message: str) -> None:
        """``message`` as a warning, the first time ``cause`` is met only."""
        if cause not in self._warned:
            self._warned.add(cause)
            rank_zero_warn(message)

    # -- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What each directory written to holds, for a checkpoint. A record still in
        flight is not in it: its step is found in the events on resume."""
        with self._lock:
            return {"written": {d: s.to_dict() for d, s in self.log_states.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait()
        with self._lock:
            self.log_states = {
                d: LogState.from_dict(d, raw) for d, raw in state_dict.get("written", {}).items()
            }


def _cause(error: Exception) -> str:
    """What tells one failure from another: its type and, for OS errors, the error
    (not the file: each write's temporary file has a name of its own)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


# One side stream per device, made once: the record's kernels reuse the memory cached
# for it (only the writer thread uses them, one record at a time).
_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


@contextlib.contextmanager
def _side_stream(recordings: Mapping[str, DatasetRecording]) -> Iterator[None]:
    """The record's kernels on a CUDA stream of their own where its activations are on
    a GPU, so that training's kernels, queued meanwhile on the default stream, never
    wait behind them; done when the block ends, even when it raises (the rows may be
    freed then)."""
    devices = {
        acts.device
        for rec in recordings.values()
        for acts in rec.activations.values()
        if isinstance(acts, torch.Tensor) and acts.device.type == "cuda"
    }
    if not devices:
        yield
        return
    streams = []
    for device in devices:
        stream = _SIDE_STREAMS.get(device)
        if stream is None:
            stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.default_stream(device))  # the rows were made there
        streams.append(stream)
    try:
        with contextlib.ExitStack() as using:
            for stream in streams:
                using.enter_context(torch.cuda.stream(stream))
            yield
    finally:
        for stream in streams:
            stream.synchronize()
