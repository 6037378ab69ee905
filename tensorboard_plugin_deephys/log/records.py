"""Read Deephys data through a TensorBoard data provider.

The storage side of reading: which runs and tags hold Deephys data, their records,
and one array (or JSON document) at one step, decoded and kept in a bounded cache.
It works on any ``tensorboard.data.provider.DataProvider``: the Python multiplexer
(``--load_fast=false``) and the Rust data server (``--load_fast=true``). Views and
``read_log`` list runs and records here, and read a step's arrays through
``tensorboard_plugin_deephys.log.read_model``, which sits on top of it.

Example::

    reader = DeephysReader(context.data_provider)
    ctx = plugin_util.context(request.environ)
    record = reader.record(ctx, experiment_id, run="version_0")
    labels = reader.array(ctx, experiment_id, "version_0", Kind.LABELS,
                          dataset=record.ind, step=record.step)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import threading
import time
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from tensorboard import errors
from tensorboard.data import provider
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tensorboard_plugin_deephys.log import assets, step_pack, storage
from tensorboard_plugin_deephys.log.assets import ThumbnailFile
from tensorboard_plugin_deephys.log.json_documents import MalformedDocument
from tensorboard_plugin_deephys.log.lru_cache import ByteLRUCache
from tensorboard_plugin_deephys.log.metadata import (
    BLOB_KINDS,
    JSON_KINDS,
    PLUGIN_NAME,
    Kind,
    PluginContent,
    Record,
    ThumbnailReference,
    asset_path,
    decode_chunks,
    read_plugin_content,
    tag_name,
)
from tensorboard_plugin_deephys.log.run_dirs import RunDirectories
from tensorboard_plugin_deephys.log.step_pack import StepPack
from tensorboard_plugin_deephys.log.thumbnail_pack import ThumbnailPack

# Ask the provider for every datum it kept (it has sampled already on load).
_ALL_SAMPLES = 1_000_000
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
INDEX_TTL_SECONDS = 2.0
# Packs opened at once when a run's records are listed (each opening is one read).
_PACK_OPENERS = 8

TagKey = tuple[Kind, str | None, str | None]  # (kind, layer, dataset)
# Per run, the tags whose plugin content is malformed, with the cause of each.
Malformed = Mapping[str, Mapping[str, str]]


class MalformedDataError(errors.NotFoundError):
    """A document of the log (a record, a thumbnail reference, detection rows) or a
    tag's plugin content that cannot be read (``json_documents.MalformedDocument``):
    the message names the run, the step or tag, and the cause."""


@dataclasses.dataclass(frozen=True)
class RunIndex:
    """The Deephys tags of one run, by (kind, layer, dataset)."""

    tags: Mapping[TagKey, str]
    # The latest step of each tag the data provider holds.
    max_steps: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Tags of the run left out because their plugin content is malformed, with the cause.
    malformed: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def tag(self, kind: Kind, layer: str | None = None, dataset: str | None = None) -> str | None:
        return self.tags.get((Kind(kind), layer, dataset))


class DeephysReader:
    """Deephys records and arrays of the runs a data provider serves.

    Decoded arrays are kept in a bounded LRU cache shared by all requests.
    Missing data raises ``tensorboard.errors.NotFoundError``.
    """

    def __init__(
        self,
        data_provider: provider.DataProvider,
        logdir: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        logdir_spec: str | None = None,
    ) -> None:
        self._provider = data_provider
        self._run_dirs = RunDirectories(logdir, logdir_spec)
        self._cache = ByteLRUCache(cache_bytes)
        self._index_lock = threading.Lock()
        # experiment -> (when listed, (runs with a record, runs with Deephys tags only,
        # tags of malformed plugin content by run))
        self._index_cache: dict[str, tuple[float, _Listing]] = {}
        # experiment -> (when read, which tags of which runs, their steps by run)
        self._scalar_cache: dict[str, tuple[float, tuple, dict[str, frozenset[int]]]] = {}
        # (experiment, run) -> (when read, its records and malformed steps)
        self._records_cache: dict[tuple[str, str], tuple[float, _Records]] = {}

    # -- listing -----------------------------------------------------------------

    def index(self, ctx, experiment_id: str) -> dict[str, RunIndex]:
        """Every run with Deephys data, mapped to its tags.

        Listing is a round trip to the data server, and one request reads many
        arrays: the listing is reused for ``INDEX_TTL_SECONDS`` (TensorBoard itself
        reloads the logdir every few seconds).
        """
        return self._listing(ctx, experiment_id)[0]

    def runs_without_record(self, ctx, experiment_id: str) -> tuple[str, ...]:
        """Runs with Deephys tags but no record: a first record still being written, or
        an event file cut (or damaged) before its first record."""
        return self._listing(ctx, experiment_id)[1]

    def malformed_tags(self, ctx, experiment_id: str) -> Malformed:
        """Per run, the tags left out because their plugin content is malformed (a
        version that is no integer, a list where a name belongs...), with the cause of
        each: the run's other tags, and other runs, are read as if they were absent."""
        return self._listing(ctx, experiment_id)[2]

    def _listing(self, ctx, experiment_id: str) -> _Listing:
        now = time.monotonic()
        with self._index_lock:
            cached = self._index_cache.get(experiment_id)
            if cached is not None and now - cached[0] < INDEX_TTL_SECONDS:
                return cached[1]
        listing = self._list_index(ctx, experiment_id)
        with self._index_lock:
            self._index_cache[experiment_id] = (now, listing)
        return listing

    def _list_index(self, ctx, experiment_id: str) -> _Listing:
        runs: dict[str, dict[TagKey, str]] = {}
        max_steps: dict[str, dict[str, int]] = {}
        malformed: dict[str, dict[str, str]] = {}
        # The blob sequences (the records among them) are listed first: a record is
        # written after its step's tensors, so a record seen in this first listing has
        # its tensors in the second even while a loader is still reading the run. (Listed
        # the other way round, a run could show a record without its labels.)
        blobs = self._provider.list_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME
        )
        tensors = self._provider.list_tensors(
            ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME
        )
        listings = (tensors, blobs)
        for listing in listings:
            for run, tags in listing.items():
                for tag, meta in tags.items():
                    try:
                        content = read_plugin_content(meta.plugin_content)
                    except MalformedDocument as error:  # this tag only is left out
                        malformed.setdefault(run, {})[tag] = error.cause
                        continue
                    if content is not None:  # None: a newer callback's, skipped
                        runs.setdefault(run, {})[_tag_key(content)] = tag
                        max_steps.setdefault(run, {})[tag] = int(meta.max_step)
        recorded = {
            run: RunIndex(tags, max_steps[run], malformed.get(run, {}))
            for run, tags in sorted(runs.items())
            if (Kind.RECORD, None, None) in tags
        }
        without = (set(runs) | set(malformed)) - set(recorded)
        return recorded, tuple(sorted(without)), malformed

    def scalar_steps(
        self, ctx, experiment_id: str, tags: Mapping[str, Collection[str]]
    ) -> dict[str, frozenset[int]]:
        """For each run of ``tags`` (``{run: scalar tags}``), the steps at which it holds
        any of its tags, as TensorBoard's Scalars tab has them (it keeps 1000 scalars per
        tag by default, where it keeps 10 Deephys records): one read for all runs,
        reused for ``INDEX_TTL_SECONDS`` like the listing."""
        key = tuple(sorted((run, tuple(sorted(names))) for run, names in tags.items()))
        now = time.monotonic()
        with self._index_lock:
            cached = self._scalar_cache.get(experiment_id)
            if cached is not None and cached[1] == key and now - cached[0] < INDEX_TTL_SECONDS:
                return cached[2]
        steps: dict[str, set[int]] = {run: set() for run in tags}
        wanted = sorted({name for names in tags.values() for name in names})
        if wanted:
            # One read over runs x tags; a tag a run lacks is simply absent.
            series = self._provider.read_scalars(
                ctx,
                experiment_id=experiment_id,
                plugin_name=scalar_metadata.PLUGIN_NAME,
                downsample=_ALL_SAMPLES,
                run_tag_filter=provider.RunTagFilter(runs=sorted(tags), tags=wanted),
            )
            for run, by_tag in series.items():
                for tag, data in by_tag.items():
                    if run in steps and tag in tags[run]:
                        steps[run].update(int(datum.step) for datum in data)
        result = {run: frozenset(found) for run, found in steps.items()}
        with self._index_lock:
            self._scalar_cache[experiment_id] = (now, key, result)
        return result

    def run_index(self, ctx, experiment_id: str, run: str) -> RunIndex:
        index = self.index(ctx, experiment_id)
        if run not in index:
            malformed = self.malformed_tags(ctx, experiment_id).get(run)
            if malformed:
                raise MalformedDataError(
                    f"run {run!r} has no readable Deephys record: {_malformed_tags(malformed)}"
                )
            raise errors.NotFoundError(
                f"run {run!r} has no Deephys data; runs with data: {sorted(index)}"
            )
        return index[run]

    # -- records -----------------------------------------------------------------

    def records(self, ctx, experiment_id: str, run: str) -> list[Record]:
        """The recorded validation epochs of ``run``, oldest first (records that are
        malformed left out: :meth:`malformed_records`)."""
        return self._read_records(ctx, experiment_id, run)[0]

    def malformed_records(self, ctx, experiment_id: str, run: str) -> dict[int, str]:
        """The steps of ``run`` whose record is malformed (and no readable record was
        written at that step), with the cause of each."""
        return self._read_records(ctx, experiment_id, run)[1]

    def _read_records(self, ctx, experiment_id: str, run: str) -> _Records:
        """The run's records and malformed steps, reused for ``INDEX_TTL_SECONDS`` (one
        request reads many arrays, each of which needs the record of its step)."""
        now = time.monotonic()
        key = (experiment_id, run)
        with self._index_lock:
            cached = self._records_cache.get(key)
            if cached is not None and now - cached[0] < INDEX_TTL_SECONDS:
                return cached[1]
        records = self._list_records(ctx, experiment_id, run)
        with self._index_lock:
            self._records_cache[key] = (now, records)
        return records

    def _list_records(self, ctx, experiment_id: str, run: str) -> _Records:
        """The records of the events and of the step packs, merged by step: a pack's
        record wins over the events' (every step has a pack in logs since 0.3, where
        TensorBoard keeps only some of the events' records)."""
        tag = self.run_index(ctx, experiment_id, run).tag(Kind.RECORD)
        # Should a log hold two writes at one step (the callback avoids it), the later
        # one wins, here and for the arrays (by wall time, not by event file order).
        latest: dict[int, tuple[float, Record]] = {}
        malformed: dict[int, str] = {}
        for datum in self._blob_data(ctx, experiment_id, run, tag):
            record = self._cache.get_or_compute(
                ("record", experiment_id, run, tuple(ref.blob_key for ref in datum.values)),
                functools.partial(self._parse_record, ctx, run, datum.values),
            )
            if isinstance(record, MalformedDocument):
                malformed[int(datum.step)] = record.cause
            elif record is not None and datum.wall_time >= latest.get(record.step, (-1.0,))[0]:
                latest[record.step] = (datum.wall_time, record)
        from_packs: dict[int, tuple[float, Record]] = {}
        for step, opened in self._step_packs(run):
            if isinstance(opened, StepPack):
                if opened.written >= from_packs.get(step, (-1.0,))[0]:
                    from_packs[step] = (opened.written, opened.record)
            elif step not in latest:
                malformed[step] = opened
        latest.update(from_packs)
        unread = {step: cause for step, cause in sorted(malformed.items()) if step not in latest}
        return [latest[step][1] for step in sorted(latest)], unread

    # -- step packs ----------------------------------------------------------------

    def _step_packs(self, run: str) -> list[tuple[int, StepPack | str]]:
        """Every step pack of ``run``, opened (the head of each read once, then kept in
        the cache), or the cause that it cannot be read; ``[]`` for a run whose
        directory is unknown or that has no packs (logs before 0.3)."""
        try:
            run_dir = self._run_dirs.path(run)
        except LookupError:
            return []
        try:
            names = step_pack.list_packs(run_dir)
        except storage.MissingBackendError as error:
            raise errors.NotFoundError(f"run {run!r}: {error}") from None
        except OSError as error:  # an unreachable store, a folder that is not one
            raise errors.NotFoundError(
                f"run {run!r}: its step packs cannot be listed: {type(error).__name__}: {error}"
            ) from None
        if not names:
            return []
        unopened = [name for name in names if _pack_key(run_dir, name) not in self._cache]
        if len(unopened) > 1:  # one read each: in parallel (the results stay in the cache)
            with concurrent.futures.ThreadPoolExecutor(min(_PACK_OPENERS, len(unopened))) as pool:
                pool.map(lambda name: self._open_pack(run, run_dir, name), unopened)
        opened = [self._open_pack(run, run_dir, name) for name in names]
        return [
            (int(step_pack.pack_step(name) or 0), pack)
            for name, pack in zip(names, opened, strict=True)
        ]

    def _open_pack(self, run: str, run_dir: str, relative: str) -> StepPack | str:
        """The pack ``relative`` of ``run``, or why it cannot be read."""
        try:
            return self._cache.get_or_compute(
                _pack_key(run_dir, relative), lambda: StepPack.open(run_dir, relative)
            )
        except FileNotFoundError:
            return f"its step pack {relative} is missing"
        except (OSError, ValueError) as error:  # damaged, unreachable, or not ours
            return f"{type(error).__name__}: {error}"

    def _pack(self, run: str, record: Record) -> StepPack:
        """The step pack of a record that names one; ``NotFoundError`` naming the step
        and the cause when it is missing or unreadable."""
        try:
            run_dir = self._run_dirs.path(run)
        except LookupError as error:
            raise errors.NotFoundError(
                f"run {run!r}, step {record.step}: the step's arrays are a file beside the "
                f"events, and {error}"
            ) from None
        opened = self._open_pack(run, run_dir, record.pack)
        if isinstance(opened, str):
            missing = opened.startswith("its step pack")
            hint = " (copy the run directory with its plugins/ folder)" if missing else ""
            raise errors.NotFoundError(f"run {run!r}, step {record.step}: {opened}{hint}")
        return opened

    def _pack_array(self, run: str, record: Record, tag: str, what: str) -> np.ndarray:
        pack = self._pack(run, record)
        if tag not in pack.names:
            raise errors.NotFoundError(f"run {run!r} has no {what} at step {record.step}")
        try:
            return pack.array(tag)
        except FileNotFoundError:
            raise errors.NotFoundError(
                f"run {run!r}, step {record.step}: its step pack {record.pack} is missing "
                "(copy the run directory with its plugins/ folder)"
            ) from None
        except (OSError, ValueError) as error:
            raise errors.NotFoundError(
                f"run {run!r}, step {record.step}: {type(error).__name__}: {error}"
            ) from None

    def _pack_document(
        self, ctx, experiment_id: str, run: str, tag: str, kind: Kind, step: int, what: str
    ) -> bytes:
        """A JSON document of the pack at ``step``; for thumbnails, the latest one at or
        before it (a pack names the thumbnails written with it), then the events'."""
        records = [r for r in self.records(ctx, experiment_id, run) if r.step <= step]
        for record in reversed(records):
            if record.pack:
                found = self._pack(run, record).documents.get(tag)
                if found is not None:
                    return found
            if kind is not Kind.THUMBNAILS or not record.pack:
                break
        if kind is Kind.THUMBNAILS and tag in self.run_index(ctx, experiment_id, run).max_steps:
            datum = self._datum(ctx, experiment_id, run, tag, kind, step)
            return b"".join(self._read_blob(ctx, run, ref) for ref in datum.values)
        raise errors.NotFoundError(f"run {run!r} has no {what} at step {step}")

    def _parse_record(
        self, ctx, run: str, refs: Sequence[provider.BlobReference]
    ) -> Record | MalformedDocument | None:
        """The record of ``refs``; None for a newer version; the error of a malformed one
        (kept in the cache like a record, so that it is parsed once)."""
        try:
            return Record.parse(b"".join(self._read_blob(ctx, run, ref) for ref in refs))
        except MalformedDocument as error:
            return error

    def record(self, ctx, experiment_id: str, run: str, step: int | None = None) -> Record:
        """The record at ``step``, or the latest one when ``step`` is None."""
        records, malformed = self._read_records(ctx, experiment_id, run)
        if step is not None and step in malformed:
            raise MalformedDataError(
                f"run {run!r}: the record at step {step} is malformed: {malformed[step]}"
            )
        if not records:
            detail = "".join(
                f"; the record at step {s} is malformed: {cause}" for s, cause in malformed.items()
            )
            raise errors.NotFoundError(f"run {run!r} has no readable Deephys record{detail}")
        if step is None:
            return records[-1]
        for record in records:
            if record.step == step:
                return record
        raise errors.NotFoundError(
            f"run {run!r} has no Deephys record at step {step}; steps: {[r.step for r in records]}"
        )

    def missing(
        self, ctx, experiment_id: str, run: str, record: Record, *, exact: bool = False
    ) -> tuple[str, ...]:
        """The tags ``record`` lists as written at its step that the data provider holds
        no data for at that step: the record is incomplete (a damaged or truncated event
        file, or steps sampled out), and views that need them answer 404 saying so.

        By default a cheap check from the tag listing (no data at or after the step);
        ``exact`` reads each tag's steps (fine in process, as ``read_log`` does; costly
        over the Rust data server). Records of older logs list no tags: ``()``.
        """
        index = self.run_index(ctx, experiment_id, run)
        # Tags of kinds this reader does not know (a newer callback's) are not its to miss.
        known = [tag for tag in record.arrays if tag.rsplit("/", 1)[-1] in _KIND_NAMES]
        if record.pack:  # a pack is written whole: it lacks nothing unless it is gone
            try:
                pack = self._pack(run, record)
            except errors.NotFoundError:
                return tuple(known)
            return tuple(t for t in known if t not in pack.names and t not in pack.documents)
        late = [tag for tag in known if index.max_steps.get(tag, -1) < record.step]
        if not exact:
            return tuple(late)
        kinds = {tag: key[0] for key, tag in index.tags.items()}
        missing = []
        for tag in known:
            if tag in late:
                missing.append(tag)
                continue
            read = self._blob_data if kinds[tag] in BLOB_KINDS else self._tensor_data
            if not any(d.step == record.step for d in read(ctx, experiment_id, run, tag)):
                missing.append(tag)
        return tuple(missing)

    # -- arrays ------------------------------------------------------------------

    def array(
        self,
        ctx,
        experiment_id: str,
        run: str,
        kind: Kind,
        *,
        step: int,
        layer: str | None = None,
        dataset: str | None = None,
    ) -> np.ndarray:
        """One array at ``step`` (the JSON kinds are documents: :meth:`document`)."""
        kind = Kind(kind)
        if kind in JSON_KINDS:
            raise ValueError(
                f"{kind.value} is a JSON document, not an array: read it with document()"
            )
        record = self._packed_record(ctx, experiment_id, run, step)
        if record is not None:
            tag = tag_name(kind, layer=layer, dataset=dataset)
            what = f"{kind.value} for {_where(layer, dataset)}"
            return self._cache.get_or_compute(
                (experiment_id, run, record.pack, tag),
                lambda: self._pack_array(run, record, tag, what),
            )
        tag = self._tag(ctx, experiment_id, run, kind, layer, dataset)
        key = (experiment_id, run, tag, step)
        return self._cache.get_or_compute(
            key, lambda: self._load_array(ctx, experiment_id, run, tag, kind, step)
        )

    def array_shape(
        self,
        ctx,
        experiment_id: str,
        run: str,
        kind: Kind,
        *,
        step: int,
        layer: str | None = None,
        dataset: str | None = None,
    ) -> tuple[int, ...] | None:
        """The shape of an array of a step pack, from the pack's header (no array is
        read); None for a step of the events layout, or an array the pack lacks."""
        record = self._packed_record(ctx, experiment_id, run, step)
        if record is None:
            return None
        return self._pack(run, record).shape(tag_name(Kind(kind), layer=layer, dataset=dataset))

    def _packed_record(self, ctx, experiment_id: str, run: str, step: int) -> Record | None:
        """The record at ``step`` when its arrays are in a step pack; None for a step of
        the events layout (or none at all: the events' readers say what is missing)."""
        for record in self.records(ctx, experiment_id, run):
            if record.step == step:
                return record if record.pack else None
        return None

    def document(
        self,
        ctx,
        experiment_id: str,
        run: str,
        kind: Kind,
        *,
        step: int,
        layer: str | None = None,
        dataset: str | None = None,
    ) -> bytes:
        """The JSON document (``metadata.JSON_KINDS``: a thumbnail reference, detection
        rows) of ``kind`` at ``step``, as the bytes written.

        Thumbnails are written once per dataset, so for them the latest write at or
        before ``step`` is returned (or the first one, for older steps).
        """
        kind = Kind(kind)
        if kind not in JSON_KINDS:
            raise ValueError(f"{kind.value} is an array, not a JSON document: read it with array()")
        if self._packed_record(ctx, experiment_id, run, step) is not None:
            tag = tag_name(kind, layer=layer, dataset=dataset)
            what = f"{kind.value} for {_where(layer, dataset)}"
            return self._pack_document(ctx, experiment_id, run, tag, kind, step, what)
        tag = self._tag(ctx, experiment_id, run, kind, layer, dataset)
        key = ("document", experiment_id, run, tag, step)
        return self._cache.get_or_compute(
            key,
            lambda: b"".join(
                self._read_blob(ctx, run, ref)
                for ref in self._datum(ctx, experiment_id, run, tag, kind, step).values
            ),
        )

    def _tag(
        self, ctx, experiment_id: str, run: str, kind: Kind, layer: str | None, dataset: str | None
    ) -> str:
        """The tag of ``kind`` for ``layer`` and ``dataset`` in ``run``."""
        index = self.run_index(ctx, experiment_id, run)
        tag = index.tag(kind, layer, dataset)
        if tag is None:
            where = _where(layer, dataset)
            if index.malformed:
                raise MalformedDataError(
                    f"run {run!r} has no {kind.value} for {where}; "
                    f"{_malformed_tags(index.malformed)}"
                )
            raise errors.NotFoundError(f"run {run!r} has no {kind.value} for {where}")
        return tag

    def remember(self, key: tuple, compute):
        """A small value derived from arrays (such as a check's verdict), kept in the
        shared cache under ``key`` so that it is computed once, not per request."""
        return self._cache.get_or_compute(("derived", *key), compute)

    def thumbnails(
        self, ctx, experiment_id: str, run: str, dataset: str, step: int
    ) -> ThumbnailPack | ThumbnailFile:
        """The uint8 ``[N, H, W, 3]`` thumbnails of ``dataset`` as of ``step``: a
        ``ThumbnailPack`` (``tensorboard_plugin_deephys.log.thumbnail_pack``), or for the
        raw ``.npy`` files of logs before 0.2 a ``ThumbnailFile``
        (``tensorboard_plugin_deephys.log.assets``). Reading one image reads its bytes."""
        reference = self.document(
            ctx, experiment_id, run, Kind.THUMBNAILS, step=step, dataset=dataset
        )
        try:
            run_dir = self._run_dirs.path(run)
        except LookupError as error:
            raise errors.NotFoundError(
                f"the thumbnails of {dataset!r} are files beside the events, and {error}"
            ) from None
        try:
            relative = ThumbnailReference.from_json(
                reference, f"the thumbnail reference of {dataset!r}"
            ).file
        except MalformedDocument as error:
            raise MalformedDataError(f"run {run!r}, step {step}: {error}") from None
        except ValueError as error:
            raise errors.NotFoundError(f"run {run!r}, step {step}: {error}") from None
        path = asset_path(run_dir, relative)
        try:
            return self._cache.get_or_compute(
                ("thumbnails", path), lambda: assets.open_thumbnails(run_dir, relative)
            )
        except FileNotFoundError:
            raise errors.NotFoundError(
                f"the thumbnails of {dataset!r} are missing: {path} (copy the run directory "
                "with its plugins/ folder)"
            ) from None
        except storage.MissingBackendError as error:
            raise errors.NotFoundError(f"the thumbnails of {dataset!r}: {error}") from None
        except (OSError, ValueError) as error:  # damaged, unreachable, or not ours
            raise errors.NotFoundError(
                f"run {run!r}, step {step}: the thumbnails of {dataset!r} are unreadable: "
                f"{type(error).__name__}: {error}"
            ) from None

    def _datum(self, ctx, experiment_id: str, run: str, tag: str, kind: Kind, step: int):
        """The datum of ``tag`` at ``step`` (for thumbnails: the latest at or before it)."""
        if kind in BLOB_KINDS:
            data = self._blob_data(ctx, experiment_id, run, tag)
        else:
            data = self._tensor_data(ctx, experiment_id, run, tag)
        datum = _pick_step(data, step, latest_before=kind is Kind.THUMBNAILS)
        if datum is None:
            raise errors.NotFoundError(
                f"tag {tag!r} of run {run!r} has no data at step {step} "
                "(TensorBoard may have sampled it out: start it with "
                "--samples_per_plugin=deephys=0 to keep every step; or its event file "
                "is damaged there: deephys-lightning scores LOGDIR says where)"
            )
        return datum

    def _load_array(
        self, ctx, experiment_id: str, run: str, tag: str, kind: Kind, step: int
    ) -> np.ndarray:
        datum = self._datum(ctx, experiment_id, run, tag, kind, step)
        if kind in BLOB_KINDS:  # .npy chunks
            return decode_chunks([self._read_blob(ctx, run, v) for v in datum.values])
        return np.asarray(datum.numpy)

    def _tensor_data(self, ctx, experiment_id, run, tag):
        return self._read_series(self._provider.read_tensors, ctx, experiment_id, run, tag)

    def _blob_data(self, ctx, experiment_id, run, tag):
        return self._read_series(self._provider.read_blob_sequences, ctx, experiment_id, run, tag)

    @staticmethod
    def _read_series(read, ctx, experiment_id, run, tag):
        """Every datum the provider kept of one run and tag, via ``read_tensors`` or
        ``read_blob_sequences`` (they share a signature)."""
        try:
            result = read(
                ctx,
                experiment_id=experiment_id,
                plugin_name=PLUGIN_NAME,
                downsample=_ALL_SAMPLES,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
        except (ValueError, TypeError) as error:
            # The provider converts every tensor of the tag; one whose shape or dtype
            # does not fit its bytes (a damaged record the Rust loader served) fails
            # them all.
            raise errors.NotFoundError(
                f"tag {tag!r} of run {run!r} is unreadable: a damaged event record "
                f"({type(error).__name__}: {error}); deephys-lightning scores LOGDIR says where"
            ) from None
        return result.get(run, {}).get(tag, [])

    def _read_blob(self, ctx, run: str, ref: provider.BlobReference) -> bytes:
        try:
            return self._provider.read_blob(ctx, blob_key=ref.blob_key)
        except errors.InvalidArgumentError as error:
            # The key came from the provider itself, so this is the server's fault, not
            # the request's. TensorBoard's Rust data server (--load_fast=true) rejects
            # its own blob keys when the run name holds a character that JSON escapes
            # (a double quote, a backslash...): blob_key.rs parses them as borrowed &str.
            raise errors.NotFoundError(
                f"run {run!r} cannot be read by this TensorBoard's data server ({error}); "
                "with --load_fast=true a run whose name contains a double quote or a "
                "backslash is unreadable: rename its directory, or start TensorBoard with "
                "--load_fast=false"
            ) from None


_KIND_NAMES = frozenset(kind.value for kind in Kind)
_Listing = tuple[dict[str, RunIndex], tuple[str, ...], Malformed]
# A run's records, oldest first, and the steps whose record is malformed, with the cause.
_Records = tuple[list[Record], dict[int, str]]


def _pack_key(run_dir: str, relative: str) -> tuple[str, str, str]:
    """The cache key of an opened step pack."""
    return ("pack", run_dir, relative)


def _where(layer: str | None, dataset: str | None) -> str:
    return " and ".join(
        f"{what} {name!r}" for what, name in (("layer", layer), ("dataset", dataset)) if name
    )


def _malformed_tags(malformed: Mapping[str, str], shown: int = 3) -> str:
    """Which tags were left out for malformed plugin content, and why (a few)."""
    listed = "; ".join(f"tag {tag!r}: {cause}" for tag, cause in list(malformed.items())[:shown])
    more = f" (and {len(malformed) - shown} more)" if len(malformed) > shown else ""
    return f"its tags of malformed plugin content are left out: {listed}{more}"


def _tag_key(content: PluginContent) -> TagKey:
    return (content.kind, content.layer, content.dataset)


def _pick_step(data, step: int, *, latest_before: bool):
    exact = [d for d in data if d.step == step]
    if exact:
        return max(exact, key=lambda d: d.wall_time)
    if not latest_before or not data:
        return None
    earlier = [d for d in data if d.step <= step]
    return (earlier or sorted(data, key=lambda d: d.step))[-1 if earlier else 0]
