"""Read a Deephys log back as NumPy arrays.

Loads event files with TensorBoard's own event multiplexer (keeping every step)
and reads them through the same read model as the TensorBoard plugin
(``tensorboard_plugin_deephys.log.read_model``), so what you get here is what the Deephys tab shows.
Needs NumPy and TensorBoard only: ``from deephys_lightning import read_log`` does
not import torch or Lightning.

Example::

    from deephys_lightning import read_log

    log = read_log("lightning_logs/version_0")
    log.datasets                                    # ("colored", "permuted", ...), InD first
    acts = log.activations("backbone.fc1", "permuted")   # [N, M] float16, latest step
    labels = log.labels("permuted", step=log.steps[0])
"""

from __future__ import annotations

import heapq
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import directory_watcher, event_accumulator, io_wrapper
from tensorboard.compat import tf
from tensorboard.context import RequestContext
from tensorboard.errors import NotFoundError

from deephys_lightning import fast_crc
from deephys_lightning.event_files import CheckedEventMultiplexer, Damage
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.derived import OODScores
from tensorboard_plugin_deephys.log.metadata import Calibration, Detection, Kind, Record, tag_name
from tensorboard_plugin_deephys.log.read_model import DamagedDataError, StepData, UnknownNameError
from tensorboard_plugin_deephys.log.records import DeephysReader, MalformedDataError

if TYPE_CHECKING:  # read_log never imports torch: these are imported where asked for
    from deephys_lightning.contributions import ImageContributions, ZeroingEffect
    from deephys_lightning.head_detectors import LinearHead

_EXPERIMENT = ""
_KEEP_EVERYTHING = {
    event_accumulator.TENSORS: 0,
    event_accumulator.SCALARS: 0,
}


class UnreadableDataError(KeyError):
    """Data that were written but cannot be read as they are: an array that does not
    fit its record (a damaged or foreign log), a malformed document. The message names
    the array, the step and the cause. A ``KeyError``, as every missing datum is."""


class LogDamageWarning(UserWarning):
    """Part of a log was left out: a damaged or unreadable event file, malformed data
    (the message names the file or run and the cause). The rest was read."""


class DeephysLog:
    """The Deephys data of one run; arrays are read lazily and cached.

    Every accessor takes the recorded global ``step`` last; without it, the latest
    step. Missing data raise ``KeyError`` with what exists and how to record it;
    data that were written but are damaged raise its subclass
    :class:`UnreadableDataError`, naming the array and the cause.
    Use :func:`read_log` to make one.

    Example::

        log = read_log("lightning_logs/version_0")
        log.scores("backbone.fc1", "permuted").summary()["novelty_mean"]   # latest step
        log.activations("backbone.fc1", "permuted", step=log.steps[0])
    """

    def __init__(self, reader: DeephysReader, run: str, damage: tuple[Damage, ...] = ()) -> None:
        self.run = run
        # Damaged stretches of the run's event files (skipped; every intact record kept).
        self.damage = damage
        self._reader = reader
        self._ctx = RequestContext()
        self.records: tuple[Record, ...] = tuple(reader.records(self._ctx, _EXPERIMENT, run))
        self._by_step = {record.step: record for record in self.records}
        if not self.records:
            raise ValueError(f"run {run!r} holds no readable Deephys record")

    def __repr__(self) -> str:
        return (
            f"DeephysLog(run={self.run!r}, steps={list(self.steps)}, "
            f"stages={sorted({r.stage for r in self.records})}, "
            f"layers={list(self.layers)}, datasets={list(self.datasets)})"
        )

    @property
    def latest(self) -> Record:
        return self.records[-1]

    @property
    def steps(self) -> tuple[int, ...]:
        """The global steps with a record, oldest first."""
        return tuple(r.step for r in self.records)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Dataset names of the latest record, the in-distribution set first."""
        return self.latest.datasets

    @property
    def layers(self) -> tuple[str, ...]:
        return self.latest.layers

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.latest.class_names

    def record(self, step: int | None = None) -> Record:
        """The record at ``step`` (default: the latest)."""
        return self.at(step).record

    def at(self, step: int | None = None) -> StepData:
        """The read model of one step (default: the latest), as the plugin reads it.

        Its methods raise ``tensorboard.errors.NotFoundError`` rather than ``KeyError``.
        """
        if step is None:
            step = self.latest.step
        if step not in self._by_step:
            raise KeyError(f"no Deephys record at step {step}; steps: {list(self.steps)}")
        # A new one each time: only the reader's bounded cache keeps arrays in memory.
        return StepData(self._reader, self._ctx, _EXPERIMENT, self.run, self._by_step[step])

    def missing(self, step: int | None = None) -> tuple[str, ...]:
        """The tags the record at ``step`` (default: the latest) lists as written that
        this log lacks at that step: ``()`` for a complete record (and for records of
        logs written before records listed their tags). See also :attr:`damage`."""
        record = self.record(step)
        return self._reader.missing(self._ctx, _EXPERIMENT, self.run, record, exact=True)

    def activations(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float16 ``[N, M]`` activations of ``layer`` on ``dataset`` at ``step``.

        Raises:
            KeyError: the matrix was not written (it was larger than the callback's
                ``max_activation_bytes``; the view data and scores are still there).
        """
        return self._read(
            step,
            lambda data: data.activations(layer, dataset),
            "The full activation matrix is written only while it is at most "
            "DeephysCallback(max_activation_bytes=...) large; raise that (or set it to "
            "None) or record fewer images with max_images=.",
            tag_name(Kind.ACTIVATIONS, layer=layer, dataset=dataset),
        )

    def image_top_neurons(
        self, layer: str, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per image, its top neurons ``[N, n]`` and their normalized activations ``[N, n]``."""
        return self._read(step, lambda data: data.image_top_neuron_arrays(layer, dataset))

    def positions(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]``: the index in its dataset of each recorded image."""
        return self._read(step, lambda data: data.positions(dataset))

    def top_images(
        self, layer: str, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per neuron, the top image indices ``[M, k]`` and their activations ``[M, k]``."""
        return self._read(step, lambda data: data.top_image_arrays(layer, dataset))

    def top_maps(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float16 ``[M, k, h, w]``: where each neuron fires on each of its top images
        (``top_maps[j, i]`` belongs to image ``top_images(...)[0][j, i]``): its map over
        the layer's spatial dims or square token grid (``h, w <= 7``), or other tokens
        (``h = 1``, ``w <= 49``).

        Raises:
            KeyError: the step has no maps for ``layer`` (a flat layer,
                ``DeephysCallback(spatial_maps=False)``, or a log written before them).
        """

        def read(data: StepData) -> np.ndarray:
            maps = data.top_maps(layer, dataset)
            if maps is None:
                raise NotFoundError(f"step {data.step} has no maps of layer {layer!r}")
            return maps

        return self._read(
            step,
            read,
            "Maps are kept for layers whose outputs have spatial or token dims, recorded "
            "with reduction='auto' and spatial_maps=True, in logs written since they exist.",
            tag_name(Kind.TOP_MAPS, layer=layer, dataset=dataset),
        )

    def category_means(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[C, M]`` mean activation per category (NaN rows: no images)."""
        return self._read(step, lambda data: data.category_means(layer, dataset))

    def maxima(self, layer: str, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[M]`` highest activation of each neuron on ``dataset``; those of the
        InD set normalize every dataset's activations."""
        return self._read(step, lambda data: data.maxima(layer, dataset))

    def head(self, layer: str, step: int | None = None) -> LinearHead | None:
        """The linear head ``layer`` feeds, as recorded at ``step`` (its weight and
        bias), or None where the layer feeds none (or the log is older)."""

        from deephys_lightning.head_detectors import LinearHead  # torch: only when asked

        def read(data: StepData) -> LinearHead | None:
            weight = data.optional_array(Kind.HEAD_WEIGHT, layer, data.record.ind)
            bias = data.optional_array(Kind.HEAD_BIAS, layer, data.record.ind)
            return None if weight is None or bias is None else LinearHead(weight, bias)

        return self._read(step, read)

    def contributions(
        self, layer: str, dataset: str, step: int | None = None
    ) -> ImageContributions | None:
        """Per image, the neurons that contributed most to its predicted and true
        class's logits through the linear head, and its margin
        (``deephys_lightning.contributions``); None where the layer feeds no head."""

        from deephys_lightning.contributions import ImageContributions  # torch: when asked

        def read(data: StepData) -> ImageContributions | None:
            kinds = (
                Kind.PREDICTED_PUSH_NEURONS,
                Kind.PREDICTED_PUSH_VALUES,
                Kind.LABEL_PUSH_NEURONS,
                Kind.LABEL_PUSH_VALUES,
                Kind.MARGINS,
            )
            found = [data.optional_array(kind, layer, dataset) for kind in kinds]
            arrays = [a for a in found if a is not None]
            return ImageContributions(*arrays) if len(arrays) == len(kinds) else None

        return self._read(step, read)

    def zeroing(self, layer: str, dataset: str, step: int | None = None) -> ZeroingEffect | None:
        """What zeroing each neuron alone does to ``dataset``'s predictions through the
        linear head (``deephys_lightning.contributions.zeroing_effect``), or None where
        the layer feeds no head."""

        from deephys_lightning.contributions import ZeroingEffect  # torch: only when asked

        def read(data: StepData) -> ZeroingEffect | None:
            changed = data.optional_array(Kind.ZEROED_CHANGES, layer, dataset)
            accuracy = data.optional_array(Kind.ZEROED_ACCURACY, layer, dataset)
            base = data.optional_array(Kind.ZEROING_BASE, layer, dataset)
            if changed is None or accuracy is None or base is None:
                return None
            return ZeroingEffect(changed, accuracy, float(base[0]), int(base[1]))

        return self._read(step, read)

    def scores(self, layer: str, ood: str, step: int | None = None) -> OODScores:
        """Per-neuron novelty (``.novelty``, in the authors' units; ``.novelty_raw``),
        spurious score and activation ratio of an OOD set; ``.summary()`` the means."""
        return self._read(step, lambda data: data.scores(layer, ood))

    def detection(self, ood: str, step: int | None = None) -> list[Detection]:
        """The OOD detection rows of ``ood`` (``DeephysCallback(ood_detectors=...)``):
        per detector, AUROC, AUPR-In, AUPR-Out and FPR at 95 % TPR against the InD set.
        Empty when none were recorded."""
        return self._read(step, lambda data: data.detection(ood))

    def calibration(self, dataset: str, step: int | None = None) -> Calibration | None:
        """How well the classifier's confidence serves on ``dataset``: accuracy,
        expected calibration error, failure detection (AUROC of right vs wrong
        predictions, AURC). None where the step lacks it (no logit detectors, or a log
        written before)."""
        return self._read(step, lambda data: data.calibration(dataset))

    def labels(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]`` ground-truth class of each image."""
        return self._read(step, lambda data: data.labels(dataset))

    def predictions(self, dataset: str, step: int | None = None) -> np.ndarray:
        """int32 ``[N]`` predicted class of each image."""
        return self._read(step, lambda data: data.predictions(dataset))

    def top_predictions(
        self, dataset: str, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each image's most probable classes, int32 ``[N, k]`` (most probable first,
        so the first is the prediction; equal logits: the lower class first), and their
        softmax probabilities, float32 ``[N, k]``; ``k = min(5, number of classes)``.

        Raises:
            KeyError: the step was written before they were recorded.
        """
        return self._read(
            step,
            lambda data: (
                data.array(Kind.TOP_CLASSES, dataset=dataset),
                data.array(Kind.TOP_PROBABILITIES, dataset=dataset),
            ),
            "Logs written before the callback recorded each image's top predictions "
            "lack them; record again to have them.",
            tag_name(Kind.TOP_CLASSES, dataset=dataset),
        )

    def logits(self, dataset: str, step: int | None = None) -> np.ndarray:
        """float32 ``[N, C]`` classifier outputs of each image.

        Raises:
            KeyError: they were not recorded at ``step`` (by default they are written
                with the full activation matrix; ``DeephysCallback(record_logits=True)``
                always writes them).
        """
        return self._read(
            step,
            lambda data: data.logits(dataset),
            "Classifier outputs are written while the full activation matrix is "
            "(DeephysCallback(max_activation_bytes=...)), or always with "
            "DeephysCallback(record_logits=True).",
            tag_name(Kind.LOGITS, dataset=dataset),
        )

    def thumbnails(self, dataset: str, step: int | None = None) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` images of ``dataset`` (as of ``step``, default latest).

        Raises:
            KeyError: none were recorded, their reference was lost to a damaged event
                file, or their file (or the step pack that names them) is missing or
                damaged (the message says which file and why).
        """

        def read(data: StepData) -> np.ndarray:
            try:
                return data.thumbnail_array(dataset)
            except UnknownNameError:
                raise
            except NotFoundError as error:  # said again with where the images were written
                raise type(error)(self._thumbnails_cause(dataset, data.step, error)) from None

        return self._read(step, read)

    def _thumbnails_cause(self, dataset: str, step: int, error: NotFoundError) -> str:
        """Why the thumbnails of ``dataset`` at ``step`` cannot be read, from the records:
        thumbnails are written once and found as the latest write at or before a step,
        so a lost or damaged earlier write is the cause, not this step."""
        said = _words(error)
        tag = tag_name(Kind.THUMBNAILS, dataset=dataset)
        written = [r for r in self.records if r.step <= step and tag in r.arrays]
        if written and not written[-1].pack and tag in self.missing(written[-1].step):
            # The events layout: the reference is one event of the step that wrote them.
            lost = (
                f"was lost to damage of the event file {_damage_summary(self.damage)}"
                if self.damage
                else "is missing from the event files (a copy of them that lacks it?)"
            )
            return (
                f"the thumbnails of {dataset!r} at step {step} were written at step "
                f"{written[-1].step}, and the thumbnail reference written with them {lost}; "
                "the thumbnail files may be intact, but are not found without it"
            )
        if not written and self.damage and f"has no thumbnails for dataset {dataset!r}" in said:
            return (
                f"no thumbnail reference of {dataset!r} at or before step {step} could be "
                f"read, and the event file {_damage_summary(self.damage)}: if thumbnails "
                "were recorded (the default), their reference was lost there"
            )
        if written and written[-1].step != step:
            at = written[-1].step
            return f"the thumbnails of {dataset!r} at step {step} were written at step {at}: {said}"
        return said

    def _read(
        self,
        step: int | None,
        read: Callable[[StepData], Any],
        hint: str = "",
        tag: str | None = None,
    ) -> Any:
        """``read`` of the step's data; a missing array becomes a ``KeyError`` that says
        what is missing, and ``hint`` (how to record it) unless a name was wrong or the
        record lists ``tag`` as written (then it was lost: the hint would mislead); a
        damaged one an :class:`UnreadableDataError`."""
        data = self.at(step)
        try:
            return read(data)
        except UnknownNameError as error:
            raise KeyError(_words(error)) from None
        except (DamagedDataError, MalformedDataError) as error:
            raise UnreadableDataError(_words(error)) from None
        except NotFoundError as error:
            written = tag is not None and tag in data.record.arrays
            raise KeyError(
                f"{_words(error)}. {hint}" if hint and not written else _words(error)
            ) from None


def _words(error: NotFoundError) -> str:
    """The message of TensorBoard's ``NotFoundError`` without its "Not found: " prefix."""
    return str(error).removeprefix("Not found: ")


def _damage_summary(damage: tuple[Damage, ...]) -> str:
    """The damaged stretches in a few words: the file and where the first is, and how
    many more there are."""
    first = damage[0]
    more = f", and {len(damage) - 1} more damaged stretches" if len(damage) > 1 else ""
    return f"{first.path} ({first.cause} at byte {first.offset}{more})"


def read_runs(log_dir: str | os.PathLike) -> dict[str, DeephysLog]:
    """Every run under ``log_dir`` that holds Deephys data, by run name.

    Run names are paths relative to ``log_dir`` (``"."`` is ``log_dir`` itself), as
    TensorBoard shows them; a folder reached again through a symbolic link (a link
    loop, or two links to one run) is one run, under the name with the fewest links,
    then the shallowest. What could
    not be read (a damaged or unreadable event file, malformed data) is left out with
    one :class:`LogDamageWarning` per cause.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        OSError: ``log_dir`` cannot be read (access denied, an unreachable store...).
        tensorboard_plugin_deephys.log.storage.MissingBackendError: no fsspec backend
            serves ``log_dir``'s URL (the message says what to install).
    """
    logs, damage, left_out, _ = _load(log_dir)
    _warn_damage(damage)
    _warn_left_out(left_out)
    return logs


def _warn_damage(damage: dict[str, list[Damage]]) -> None:
    for found in damage.values():
        for stretch in found:
            what = "event file ends early" if stretch.at_end else "damaged event file"
            warnings.warn(f"{what}: {stretch}", LogDamageWarning, stacklevel=3)


def _warn_left_out(left_out: dict[str, str]) -> None:
    """One line per run with malformed or unreadable data: what was left out of it, and
    why."""
    for run, what in sorted(left_out.items()):
        warnings.warn(f"run {run!r}: {what}", LogDamageWarning, stacklevel=3)


def _left_out(reader: DeephysReader, run: str, tags: Mapping[str, str]) -> str | None:
    """What of ``run`` is left out for malformed data (tags of malformed plugin content,
    malformed records), in one line; None when nothing is."""
    parts = [
        f"tag {tag!r} left out, its plugin content is malformed: {c}" for tag, c in tags.items()
    ]
    if run in reader.index(RequestContext(), _EXPERIMENT):
        records = reader.malformed_records(RequestContext(), _EXPERIMENT, run)
        parts += [
            f"the record at step {s} left out, it is malformed: {c}" for s, c in records.items()
        ]
    return "; ".join(parts) or None


def _load(
    log_dir: str | os.PathLike,
) -> tuple[dict[str, DeephysLog], dict[str, list[Damage]], dict[str, str], dict[str, str]]:
    """:func:`read_runs`, the damage found in each run's event files (every run's,
    also of runs whose damage left no readable record), per run what of it was left
    out for malformed or unreadable data (a run without a readable record is left out
    whole, the others are read), and the runs whose event files could not be read,
    with the cause."""
    log_dir = os.fspath(log_dir)
    if storage.is_url(log_dir):
        log_dir = storage.normalize(log_dir)  # TensorBoard's readers list it as a folder
    try:
        if not storage.isdir(log_dir):
            raise FileNotFoundError(f"{log_dir!r} is not a directory")
        runs = _run_dirs(log_dir)
    except FileNotFoundError:
        raise
    except _store_errors() as error:  # access denied, an unreachable store...
        failure = _store_failure(log_dir, error)
        if failure is error:  # it says the folder and the cause already
            raise
        raise failure from error
    fast_crc.install()  # record checks at C speed: reading is ten times faster
    multiplexer = CheckedEventMultiplexer(size_guidance=_KEEP_EVERYTHING)
    for name, path in runs:
        multiplexer.AddRun(path, name=name)
    unreadable = _reload(multiplexer, [name for name, _ in runs])
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, log_dir)
    reader = DeephysReader(provider, logdir=log_dir)
    ctx = RequestContext()
    index, malformed = reader.index(ctx, _EXPERIMENT), reader.malformed_tags(ctx, _EXPERIMENT)
    logs: dict[str, DeephysLog] = {}
    left_out: dict[str, str] = {}
    for run in sorted(set(index) | set(malformed) | set(unreadable)):
        parts = [f"an event file cannot be read: {unreadable[run]}"] if run in unreadable else []
        parts.append(_left_out(reader, run, malformed.get(run, {})) or "")
        what = "; ".join(part for part in parts if part) or None
        try:
            if run not in index:
                raise ValueError("it holds no readable Deephys record")
            logs[run] = DeephysLog(reader, run, tuple(multiplexer.damage.get(run, ())))
        except ValueError as error:  # no readable record: this run only is left out
            cause = str(error).removeprefix(f"run {run!r} ")
            what = f"left out, {cause}" + (f" ({what})" if what else "")
        if what is not None:
            left_out[run] = what
    damage = {run: found for run, found in multiplexer.damage.items() if found}
    return logs, damage, left_out, unreadable


def _run_dirs(log_dir: str) -> list[tuple[str, str]]:
    """(run name, folder) of every folder under ``log_dir`` (itself included) that
    holds an event file, named as TensorBoard names runs (the path relative to
    ``log_dir``). Local folders are walked here so that each is listed once (where
    TensorBoard's walk follows a link loop until the path is too long: one run 40
    times): a folder reached through symbolic links too (a loop, or a link to a run)
    keeps the name with the fewest links, then the shallowest, then the first in name
    order."""
    if storage.is_url(log_dir):  # object stores have no links: TensorBoard's listing
        found = io_wrapper.GetLogdirSubdirectories(log_dir)
        return [(os.path.relpath(folder, log_dir), folder) for folder in found]
    root = storage.local_path(log_dir)
    runs: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    pending = [(0, 0, root)]  # (links followed, depth, folder): a heap
    while pending:
        links, depth, folder = heapq.heappop(pending)
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            if folder == root:  # the log directory itself: said, not taken for empty
                raise
            continue  # a folder that went away or cannot be listed, as TensorBoard skips it
        seen.add((info.st_dev, info.st_ino))
        folders = [entry for entry in entries if _is_dir(entry)]
        if any(io_wrapper.IsTensorFlowEventsFile(e.path) for e in entries if e not in folders):
            runs.append((os.path.relpath(folder, root), folder))
        for entry in folders:
            heapq.heappush(pending, (links + entry.is_symlink(), depth + 1, entry.path))
    return sorted(runs)


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder, through links (a broken link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _reload(multiplexer: CheckedEventMultiplexer, runs: list[str]) -> dict[str, str]:
    """Read each run's event files (as ``EventMultiplexer.Reload`` does, one run after
    another); the runs whose files could not be read, with the cause (TensorBoard's
    reload only logs it). What was read before the failure is kept."""
    unreadable = {}
    for run in runs:
        try:
            multiplexer.GetAccumulator(run).Reload()
        except directory_watcher.DirectoryDeletedError:
            unreadable[run] = "its folder was deleted while it was read"
        except _store_errors() as error:
            unreadable[run] = f"{type(error).__name__}: {error}"
    return unreadable


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a read of event files raises when a file or store cannot be read:
    ``OSError`` (our storage layer and local files), the errors of TensorBoard's file
    layer, and botocore's where it is loaded (TensorBoard reads ``s3://`` with boto3);
    botocore is not imported here where it is absent."""
    found: list[type[BaseException]] = [OSError, tf.errors.OpError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        found += [botocore.BotoCoreError, botocore.ClientError]
    return tuple(found)


def _store_failure(log_dir: str, error: BaseException) -> OSError:
    """``error`` of reading ``log_dir`` as an ``OSError`` whose message names the folder
    and the cause (an access denied one as a ``PermissionError``)."""
    cause = f"{type(error).__name__}: {error}"
    response = getattr(error, "response", None)  # botocore's ClientError
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if response else None
    if isinstance(error, PermissionError) or status in (401, 403):
        check = "; check the credentials the store is read with" if storage.is_url(log_dir) else ""
        return PermissionError(f"cannot read {log_dir}: access denied ({cause}){check}")
    if isinstance(error, OSError) and (error.filename or log_dir in str(error)):
        return error  # it names the file already
    return storage.StorageError(f"cannot read {log_dir}: {cause}")


def read_log(log_dir: str | os.PathLike, run: str | None = None) -> DeephysLog:
    """Read the Deephys data under ``log_dir``.

    Args:
        log_dir: a run directory (such as a TensorBoardLogger's ``log_dir``) or a
            directory of runs.
        run: which run, relative to ``log_dir`` (``"."`` is ``log_dir`` itself, the
            default when it holds Deephys data); needed when several runs below
            ``log_dir`` hold data, e.g. ``"validate_step3"``, an evaluation's own run.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        OSError: ``log_dir`` cannot be read (access denied, an unreachable store...).
        tensorboard_plugin_deephys.log.storage.MissingBackendError: no fsspec backend
            serves ``log_dir``'s URL (the message says what to install).
        ValueError: no run holds Deephys data (the message says which runs have
            damaged or unreadable event files), or several do and ``run`` is not given.
    """
    try:
        logs, damage, left_out, unreadable = _load(log_dir)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"read_log: {error}") from None
    runs = sorted(logs)
    asked = run
    damaged = "".join(
        f"; run {name!r} has damaged event files ({found[0]})"
        for name, found in sorted(damage.items())
        if name not in logs and (run is None or name == run)
    ) + "".join(
        f"; run {name!r} has an event file that cannot be read ({cause})"
        for name, cause in sorted(unreadable.items())
        if name not in logs and (run is None or name == run)
    )
    if run is None and "." in logs:
        run = "."  # a run directory itself (its evaluation runs inside it need run=)
    elif run is None and len(runs) == 1:
        run = runs[0]
    # The damage of the run read (of every run, when none can be picked).
    _warn_damage(damage if run is None else {run: damage.get(run, [])})
    # What was left out of it for malformed data; and of the runs left out whole, when
    # the run was not named (one line per run).
    _warn_left_out(
        {r: w for r, w in left_out.items() if r == run or (asked is None and r not in logs)}
    )
    if run is None:
        none = "none readable" if damaged else "none: was DeephysCallback in the Trainer?"
        raise ValueError(
            f"read_log: {os.fspath(log_dir)!r} holds Deephys data in {len(runs)} runs "
            f"({runs or none})"
            + ("; pass run= (deephys-lightning export: --run) to pick one" if runs else "")
            + damaged
        )
    if run not in logs:
        why = f" ({left_out[run]})" if run in left_out else ""
        raise ValueError(
            f"read_log: no Deephys data in run {run!r}{why}; runs with data: {runs}{damaged}"
        )
    return logs[run]
