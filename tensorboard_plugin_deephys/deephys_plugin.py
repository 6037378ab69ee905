"""The Deephys TensorBoard plugin: JSON routes and the static frontend.

TensorBoard loads it through the ``tensorboard_plugins`` entry point (see
``tensorboard_plugin_deephys.loader``). Routes live under ``/data/plugin/deephys/`` and are
documented in ``docs/http_api.md``. Each route is a thin wrapper over an
``*_impl`` method that returns plain data from the read model
(``tensorboard_plugin_deephys.log.read_model.StepData``), so the logic is testable without HTTP.

Example::

    tensorboard --logdir lightning_logs    # then open the "Deephys" tab
    curl 'http://localhost:6006/data/plugin/deephys/neuron?run=version_0&layer=fc1&neuron=3'
"""

from __future__ import annotations

import dataclasses
import logging
import math
import mimetypes
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from tensorboard import errors
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.derived import NEURON_SCORES
from tensorboard_plugin_deephys.log.metadata import (
    PLUGIN_NAME,
    Calibration,
    Detection,
    LeftOut,
    Record,
    scalar_tag,
)
from tensorboard_plugin_deephys.log.read_model import (
    LOST_MARKED,
    TOP_NEURONS,
    KeptActivation,
    Mistakes,
    Neuron,
    Pushes,
    StepData,
    TopCategories,
    TopImages,
    TopNeurons,
    TopPredictions,
)
from tensorboard_plugin_deephys.log.records import DEFAULT_CACHE_BYTES, DeephysReader
from tensorboard_plugin_deephys.request_args import (
    bool_arg,
    index_arg,
    int_arg,
    json_route,
    required_args,
    step_arg,
)

_logger = logging.getLogger(__name__)

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MAX_K = 1000
# A thumbnail asked for by its content digest (``digest=``) never changes: its URL
# names its content. Any other thumbnail URL may show other images after a new
# training into the same run: the browser asks again each time (ETag, 304).
_CONTENT_ADDRESSED_CACHE = "private, max-age=31536000, immutable"
_REVALIDATED_CACHE = "no-cache"
_DIGEST = re.compile(r"[0-9a-f]{32}")
_MISTAKES_SHOWN = 24  # false positives / negatives a page of a category answer lists
_TOP_CATEGORIES = 5
# The summary lists each dataset's most frequent confusions (off-diagonal cells); the
# confusion route pages through all of its cells.
_TOP_CONFUSIONS = 20
_CONFUSION_PAGE = 100
_MAX_CONFUSION_PAGE = 1000
# How many values per tag of a plugin's blob sequences (the Deephys records are blob
# sequences) TensorBoard keeps unless --samples_per_plugin names the plugin: 10 with
# the Python loader (--load_fast=false: data_ingester.DEFAULT_SIZE_GUIDANCE[tensors],
# the reservoir of every plugin it does not list) and 10 with the Rust data server
# (--load_fast=true: run.rs, DataClass::BlobSequence => 10). Both keep 1000 scalars
# per tag, so the accuracy scalars written at every recorded step say what was dropped.
DEFAULT_BLOB_SAMPLES = 10
KEEP_EVERY_RECORD_FLAG = f"--samples_per_plugin={PLUGIN_NAME}=0"


class DeephysPlugin(base_plugin.TBPlugin):
    """Serves the Deephys tab: comparative neuron views of InD and OOD datasets."""

    plugin_name = PLUGIN_NAME

    def __init__(
        self, context: base_plugin.TBContext, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        flags = getattr(context, "flags", None)
        self._blob_samples = _blob_sample_limit(flags)
        self._reader = DeephysReader(
            context.data_provider,
            logdir=context.logdir,
            cache_bytes=cache_bytes,
            logdir_spec=getattr(flags, "logdir_spec", None),
        )
        self._told: set[tuple] = set()  # malformed tags and records already logged

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/neuron": self._serve_neuron,
            "/summary": self._serve_summary,
            "/image": self._serve_image,
            "/category": self._serve_category,
            "/category_sets": self._serve_category_sets,
            "/confusion": self._serve_confusion,
            "/scores_over_time": self._serve_scores_over_time,
            "/thumbnail": self._serve_thumbnail,
            "/compare": self._serve_compare,
        }

    def is_active(self) -> bool:
        # TensorBoard asks the data provider whether "deephys" data exists
        # (see data_plugin_names), so this is never the expensive path.
        return False

    def data_plugin_names(self) -> tuple[str, ...]:
        return (PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Deephys")

    # -- implementations (plain data, unit-testable) ----------------------------------

    def _step(self, ctx, experiment_id: str, run: str, step: int | None) -> StepData:
        return StepData.open(self._reader, ctx, experiment_id, run, step)

    def runs_impl(self, ctx, experiment_id: str) -> dict[str, Any]:
        runs, unavailable = [], []
        records: dict[str, list[Record]] = {}
        malformed = self._reader.malformed_tags(ctx, experiment_id)
        for run, tags in malformed.items():
            for tag, cause in tags.items():
                self._tell(
                    ("tag", run, tag),
                    "run %r: tag %r left out: its plugin content is malformed: %s",
                    run,
                    tag,
                    cause,
                )
        for run in self._reader.index(ctx, experiment_id):
            try:  # one unreadable run must not empty the tab
                records[run] = self._reader.records(ctx, experiment_id, run)
                for step, cause in self._reader.malformed_records(ctx, experiment_id, run).items():
                    self._tell(
                        ("record", run, step),
                        "run %r: the record at step %d is left out: %s",
                        run,
                        step,
                        cause,
                    )
                entry = self._run_entry(ctx, experiment_id, run, records[run])
            except Exception as error:
                _logger.warning(
                    "Deephys: skipping run %r, its records are unreadable", run, exc_info=True
                )
                cause = error if isinstance(error, errors.PublicError) else "see TensorBoard's log"
                entry = {"error": f"its records are unreadable: {cause}"}
            if "error" in entry:
                unavailable.append({"run": run, **entry})
            else:
                runs.append(entry)
        limit = self._blob_samples
        at_limit = {
            entry["run"]: records[entry["run"]]
            for entry in runs
            if limit is not None
            and len(records[entry["run"]]) >= limit
            and not records[entry["run"]][-1].pack  # a pack log lists every step itself
        }
        recorded = self._recorded_steps(ctx, experiment_id, at_limit) if at_limit else {}
        for entry in runs:
            entry["sampling"] = self._sampling(records[entry["run"]], recorded.get(entry["run"]))
        for run in self._reader.runs_without_record(ctx, experiment_id):
            if malformed.get(run):
                causes = "; ".join(f"tag {t!r}: {c}" for t, c in list(malformed[run].items())[:3])
                cause = f"its record cannot be read: malformed plugin content ({causes})"
            else:
                cause = (
                    "it holds Deephys arrays but no record yet: its first record is being "
                    "written, or its event file ends (or is damaged) before it"
                )
            unavailable.append({"run": run, "error": cause})
        # Runs with Deephys tags that cannot be shown, each with its cause (the tab says so).
        return {"runs": runs, "unavailable": unavailable}

    def _tell(self, key: tuple, message: str, *args: Any) -> None:
        """Log ``message`` once per ``key`` (the runs route is asked every few seconds)."""
        if key not in self._told:
            self._told.add(key)
            _logger.warning("Deephys: " + message, *args)

    def _run_entry(
        self, ctx, experiment_id: str, run: str, records: list[Record]
    ) -> dict[str, Any]:
        """One run of the runs route, or ``{"error": ...}`` when it has no record to show."""
        if not records:
            return {"error": "it holds no readable Deephys record"}
        latest = records[-1]
        return {
            "run": run,
            "steps": [
                {
                    "step": r.step,
                    "epoch": r.epoch,
                    "stage": r.stage,
                    # arrays the record lists that the log lacks: the tab says so
                    "missing": list(self._reader.missing(ctx, experiment_id, run, r)),
                }
                for r in records
            ],
            "layers": list(latest.layers),
            "datasets": list(latest.datasets),
            "ind": latest.ind,
            "class_names": list(latest.class_names),
            "num_images": latest.num_images,
            "top_k": latest.top_k,
        }

    def _recorded_steps(
        self, ctx, experiment_id: str, records: Mapping[str, list[Record]]
    ) -> dict[str, frozenset[int]]:
        """Per run, the steps of its accuracy scalars (``deephys/<dataset>/accuracy``,
        written at every recorded step unless ``log_scalars=False``); empty for a run
        without them. A provider that fails this read leaves every run to the fallback."""
        tags = {
            run: {scalar_tag("accuracy", dataset=d) for r in kept for d in r.datasets}
            for run, kept in records.items()
        }
        try:
            return self._reader.scalar_steps(ctx, experiment_id, tags)
        except Exception:  # the scalars only refine a notice: never fail the runs route
            _logger.warning("Deephys: cannot read the accuracy scalars", exc_info=True)
            return {}

    def _sampling(
        self, records: list[Record], scalar_steps: frozenset[int] | None
    ) -> dict[str, Any] | None:
        """Whether TensorBoard dropped records of a run by sampling: None if not, else how
        many it kept, how many steps were recorded (None: unknown) and the flag that
        keeps them all.

        The sampler drops values only once a tag holds as many as its limit, so fewer
        records than that (or no limit) are all there were. At the limit, the accuracy
        scalars count the recorded steps when they cover every kept record; without
        them (``log_scalars=False``, or scalars sampled themselves) the count is unknown.
        """
        if self._blob_samples is None or len(records) < self._blob_samples:
            return None
        if records[-1].pack:  # since 0.3 every step's record is in its step pack
            return None
        kept = {r.step for r in records}
        # Scalars after the latest record kept belong to a record still being written:
        # the sampler always keeps the latest value of a tag.
        scalars = {step for step in scalar_steps or () if step <= max(kept)}
        recorded = len(scalars) if kept <= scalars else None
        if recorded == len(kept):
            return None
        return {"kept": len(records), "recorded": recorded, "flag": KEEP_EVERY_RECORD_FLAG}

    def neuron_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        layer: str,
        neuron: int,
        step: int | None = None,
        k: int | None = None,
    ) -> dict[str, Any]:
        """Top images of one neuron in every dataset, normalised by the InD maximum; per
        dataset also its maximum, whether it fires there, its top categories, its
        activation histogram, its lowest images and examples of each activation band."""
        data = self._step(ctx, experiment_id, run, step)
        picked = data.neuron(layer, neuron)  # checked once: below, its rows are read as they are
        k = data.record.top_k if k is None else min(k, data.record.top_k)
        datasets = []
        for dataset in data.record.datasets:
            maximum = data.maxima(layer, dataset)[neuron]
            categories = picked.top_categories(dataset, _TOP_CATEGORIES)
            entry = {
                "name": dataset,
                "role": data.role(dataset),
                **dict.fromkeys(NEURON_SCORES),
                "max": _finite(maximum),
                "fires": derived.fires(maximum),
                "top_categories": None if categories is None else _category_list(categories),
                "images": _image_list(picked.top_images(dataset, k), picked.top_maps(dataset, k)),
                **_beyond_the_top(picked, dataset, k),
                "left_out": _left_out_list(data.left_out(dataset, layer)),
                "zeroing": data.zeroing(layer, dataset, neuron),
            }
            if dataset != data.record.ind:
                per_neuron = data.scores(layer, dataset).per_neuron()
                entry.update({name: _finite(v[neuron]) for name, v in per_neuron.items()})
            datasets.append(entry)
        return {
            **_header(data, layer),
            "epoch": data.record.epoch,
            "neuron": neuron,
            "num_neurons": data.num_neurons(layer),
            "ind_max": _finite(data.ind_max(layer)[neuron]),
            "dead": bool(derived.dead_neurons(data.ind_max(layer)[neuron : neuron + 1])[0]),
            "datasets": datasets,
        }

    def summary_impl(
        self, ctx, experiment_id: str, run: str, layer: str, step: int | None = None
    ) -> dict[str, Any]:
        """Accuracy and confusion per dataset (the dense matrix for a few classes, the
        most frequent confusions for any number); per OOD set, every neuron's scores,
        their headline numbers and densities, and the OOD detection rows."""
        data = self._step(ctx, experiment_id, run, step)
        data.check_layer(layer)
        datasets = []
        ind_accuracy = data.accuracy(data.record.ind)
        for dataset in data.record.datasets:
            entry: dict[str, Any] = {
                "name": dataset,
                "role": data.role(dataset),
                "num_images": len(data.labels(dataset)),
                "dataset_size": data.record.dataset_sizes.get(dataset),
                "accuracy": _finite(data.accuracy(dataset)),
                "left_out": _left_out_list(data.left_out(dataset, layer)),
                "calibration": _calibration(data.calibration(dataset), ind_accuracy),
                **_confusion_summary(data, dataset),
            }
            if dataset != data.record.ind:
                scores = data.scores(layer, dataset)
                entry["scores"] = {
                    name: _finite_list(values) for name, values in scores.per_neuron().items()
                }
                entry["detection"] = [_detection_row(row) for row in data.detection(dataset)]
                entry["summary"] = {
                    name: _finite(value) for name, value in scores.summary().items()
                }
                entry["densities"] = {
                    name: {"edges": edges.tolist(), "density": _finite_list(hist), "count": count}
                    for name, (hist, edges, count) in scores.densities().items()
                }
            datasets.append(entry)
        return {
            **_header(data, layer),
            "epoch": data.record.epoch,
            "num_neurons": data.num_neurons(layer),
            "dead": np.flatnonzero(derived.dead_neurons(data.ind_max(layer))).tolist(),
            "datasets": datasets,
        }

    def image_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        layer: str,
        dataset: str,
        index: int,
        step: int | None = None,
        n: int = 10,
        k: int = 6,
    ) -> dict[str, Any]:
        """One image: label, prediction, its top neurons by normalized activation, and
        each neuron's top images in InD and in the image's own dataset."""
        data = self._step(ctx, experiment_id, run, step)
        data.check_layer(layer)
        top = data.image_top_neurons(layer, dataset, index, n)  # checks dataset and index
        sources = [data.record.ind] + ([dataset] if dataset != data.record.ind else [])
        top_neurons = [
            {
                "neuron": picked.index,
                "normalized": _finite(value),
                "top_images": {
                    source: _image_list(picked.top_images(source, k), picked.top_maps(source, k))
                    for source in sources
                },
            }
            for picked, value in zip(
                (data.neuron(layer, neuron) for neuron in top.neurons.tolist()),
                top.values.tolist(),
                strict=True,
            )
        ]
        return {
            **_header(data, layer),
            "dataset": dataset,
            "role": data.role(dataset),
            "index": index,
            "position": int(data.positions(dataset)[index]),
            "label": int(data.labels(dataset)[index]),
            "prediction": _class_or_none(data.predictions(dataset)[index]),
            "top_predictions": _prediction_list(data.top_predictions(dataset, index)),
            # where the image's own values are not finite: why it has no top neurons
            "left_out": _left_out_list(data.left_out(dataset, layer)) if not top_neurons else [],
            "pushes": _pushes(data.image_pushes(layer, dataset, index, n)),
            "top_neurons": top_neurons,
        }

    def category_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        layer: str,
        dataset: str,
        label: int,
        pred: int | None = None,
        step: int | None = None,
        page: int = 0,
        page_size: int = 50,
        either: bool = False,
        fp_page: int = 0,
        fn_page: int = 0,
    ) -> dict[str, Any]:
        """A category (``label``) or a confusion set (``label`` predicted as ``pred``;
        with ``either``, also ``pred`` predicted as ``label``): neurons ranked by mean
        normalized activation over its images, and its images, paginated; for a
        category, its false positives and negatives, pages ``fp_page`` and ``fn_page``
        of ``_MISTAKES_SHOWN`` each."""
        data = self._step(ctx, experiment_id, run, step)
        data.check_layer(layer)
        data.check_dataset(dataset)
        if pred is None:
            if either:
                raise errors.InvalidArgumentError("either=1 needs pred, the other class")
            top = data.category_top_neurons(layer, dataset, label)
        else:
            top = data.pair_top_neurons(layer, dataset, label, pred, either)
            if fp_page or fn_page:
                raise errors.InvalidArgumentError("fp_page and fn_page page a category: no pred")
        members = data.members(dataset, label, pred, either)
        data.check_page(page, page_size, len(members))
        start = page * page_size
        return {
            **_header(data, layer),
            "dataset": dataset,
            "label": label,
            "pred": pred,
            "either": either,
            "either_available": data.has_either_confusions(layer, dataset),
            "means": "normalized" if top.normalized else "raw",
            "num_images": len(members),
            "page": page,
            "page_size": page_size,
            "neurons": _neuron_list(top, "mean"),
            # a directed confusion set (label predicted as pred): the neurons that pushed
            # pred over label most, on average, through the linear head
            "pushes": _pair_pushes(data, layer, dataset, label, pred, either),
            "images": _members_list(data, dataset, members[start : start + page_size]),
            **(
                _mistakes(data, dataset, data.mistakes(dataset, label), fp_page, fn_page)
                if pred is None
                else {}
            ),
        }

    def category_sets_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        layer: str,
        label: int,
        step: int | None = None,
        n: int = 10,
        k: int = 12,
    ) -> dict[str, Any]:
        """Category ``label`` in every set side by side, InD first: the set's recall of
        it, its images of it (the first ``k``), its own ``n`` top neurons, and what it
        keeps of the InD set's ``n`` top neurons (``StepData.kept_activation``: the
        lowest kept shares marked ``lost``)."""
        data = self._step(ctx, experiment_id, run, step)
        data.check_layer(layer)
        data.check_class("label", label)
        datasets = []
        for dataset in data.record.datasets:
            members = data.members(dataset, label)
            own = data.category_top_neurons(layer, dataset, label)
            datasets.append(
                {
                    "name": dataset,
                    "role": data.role(dataset),
                    "accuracy": _finite(data.category_accuracy(dataset, label)),
                    "num_images": len(members),
                    "neurons": _neuron_list(TopNeurons(own.neurons[:n], own.values[:n]), "mean"),
                    "ind_neurons": _kept_list(data.kept_activation(layer, dataset, label, n)),
                    "images": _members_list(data, dataset, members[:k]),
                }
            )
        return {
            **_header(data, layer),
            "label": label,
            "n": n,
            "k": k,
            "lost_marked": LOST_MARKED,
            "datasets": datasets,
        }

    def confusion_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        dataset: str,
        step: int | None = None,
        label: int | None = None,
        pred: int | None = None,
        diagonal: bool = True,
        page: int = 0,
        page_size: int = _CONFUSION_PAGE,
    ) -> dict[str, Any]:
        """The cells of one dataset's confusion matrix that hold images, most images
        first, paginated: all of them, those of one true class (``label``), of one
        predicted class (``pred``) or both; without the diagonal (correct predictions)
        when ``diagonal`` is False. Memory and time grow with the images, not with the
        square of the classes."""
        data = self._step(ctx, experiment_id, run, step)
        data.check_dataset(dataset)
        for name, value in (("label", label), ("pred", pred)):
            if value is not None:
                data.check_class(name, value)
        cells = data.confusion_cells(dataset)
        kept = np.ones(len(cells), dtype=bool)
        if label is not None:
            kept &= cells[:, 0] == label
        if pred is not None:
            kept &= cells[:, 1] == pred
        if not diagonal:
            kept &= cells[:, 0] != cells[:, 1]
        cells = cells[kept]
        data.check_page(page, page_size, len(cells), noun="cell")
        start = page * page_size
        return {
            "run": data.run,
            "step": data.step,
            "stage": data.record.stage,
            "dataset": dataset,
            "num_classes": len(data.record.class_names),
            "label": label,
            "pred": pred,
            "diagonal": diagonal,
            "num_cells": len(cells),
            "num_images": int(cells[:, 2].sum()),
            "page": page,
            "page_size": page_size,
            "cells": _cell_list(cells[start : start + page_size]),
        }

    def scores_over_time_impl(
        self, ctx, experiment_id: str, run: str, layer: str, dataset: str, neuron: int | None
    ) -> dict[str, Any]:
        """Per recorded step: mean scores of an OOD set, or one neuron's scores."""
        points = []
        for data in StepData.every_step(self._reader, ctx, experiment_id, run):
            if layer not in data.record.layers or dataset not in data.record.ood:
                continue
            try:
                scores = data.scores(layer, dataset)
            except errors.NotFoundError:
                continue  # this step was sampled out for some tag
            if neuron is None:
                summary = scores.summary()
                values = {name: summary[f"{name}_mean"] for name in NEURON_SCORES}
            else:
                data.check_neuron(layer, neuron, len(scores.novelty_raw))
                values = {name: v[neuron] for name, v in scores.per_neuron().items()}
            points.append(
                {
                    "step": data.step,
                    "epoch": data.record.epoch,
                    **{name: _finite(v) for name, v in values.items()},
                }
            )
        if not points:
            raise errors.NotFoundError(
                f"run {run!r} has no scores for layer {layer!r} on OOD set {dataset!r}"
            )
        return {"run": run, "layer": layer, "dataset": dataset, "neuron": neuron, "points": points}

    def compare_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        other_run: str,
        layer: str,
        step: int | None = None,
        other_step: int | None = None,
    ) -> dict[str, Any]:
        """Whether two records (two steps of a run, or steps of two runs) can be shown
        side by side on ``layer``, their units matched by index; if not, why in words."""
        a = self._step(ctx, experiment_id, run, step)
        b = self._step(ctx, experiment_id, other_run, other_step)
        why = _why_not_comparable(a, b, layer)
        return {
            "comparable": why is None,
            "why": why,
            "a": _side(a),
            "b": _side(b),
            "matched_by": "neuron index",
        }

    def thumbnail_impl(
        self,
        ctx,
        experiment_id: str,
        run: str,
        dataset: str,
        index: int,
        step: int | None,
        digest: str | None = None,
    ) -> tuple[bytes, str]:
        """Image ``index`` of ``dataset`` as stored (PNG or JPEG), and its media type;
        with ``digest``, only while the thumbnails are those of that content digest."""
        data = self._step(ctx, experiment_id, run, step)
        self.thumbnail_digest_impl(data, dataset, index, digest)
        return _named(data, lambda: data.thumbnail_encoded(dataset, index))

    def thumbnail_digest_impl(
        self, data: StepData, dataset: str, index: int, digest: str | None = None
    ) -> str | None:
        """The content digest of ``dataset``'s thumbnails as of ``data``'s step (the one
        in their file name, which opening the file checked it holds), after checking
        ``index``; None for a file name without one. ``NotFoundError`` (404) when
        ``digest`` is given and is not it: the images changed since it was read."""
        images = _named(data, lambda: data.thumbnails(dataset))
        data.check_image(dataset, index)
        current = getattr(images, "digest", None)
        if digest is not None and digest != current:
            raise errors.NotFoundError(
                f"run {data.run!r}, step {data.step}: the thumbnails of {dataset!r} are now "
                f"{current}, not {digest} (the images changed since this page read them: "
                "reload the tab)"
            )
        return current

    # -- routes (thin) -----------------------------------------------------------------

    @json_route
    def _serve_runs(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.runs_impl(ctx, experiment_id)

    @json_route
    def _serve_summary(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.summary_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer"),
            step=step_arg(request),
        )

    @json_route
    def _serve_neuron(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.neuron_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer"),
            neuron=index_arg(request, "neuron", default=0),
            step=step_arg(request),
            k=int_arg(request, "k", minimum=1, maximum=_MAX_K),
        )

    @json_route
    def _serve_image(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.image_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer", "dataset"),
            index=index_arg(request, "index", default=0),
            step=step_arg(request),
            n=int_arg(request, "n", default=10, minimum=1, maximum=100),
            k=int_arg(request, "k", default=6, minimum=1, maximum=_MAX_K),
        )

    @json_route
    def _serve_category(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.category_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer", "dataset"),
            label=index_arg(request, "label", default=0),
            pred=index_arg(request, "pred"),
            step=step_arg(request),
            page=index_arg(request, "page", default=0),
            page_size=int_arg(request, "page_size", default=50, minimum=1, maximum=500),
            either=bool_arg(request, "either"),
            fp_page=index_arg(request, "fp_page", default=0),
            fn_page=index_arg(request, "fn_page", default=0),
        )

    @json_route
    def _serve_category_sets(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.category_sets_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer"),
            label=index_arg(request, "label", default=0),
            step=step_arg(request),
            n=int_arg(request, "n", default=10, minimum=1, maximum=TOP_NEURONS),
            k=int_arg(request, "k", default=12, minimum=0, maximum=100),
        )

    @json_route
    def _serve_confusion(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.confusion_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "dataset"),
            step=step_arg(request),
            label=index_arg(request, "label"),
            pred=index_arg(request, "pred"),
            diagonal=bool_arg(request, "diagonal", default=True),
            page=index_arg(request, "page", default=0),
            page_size=int_arg(
                request,
                "page_size",
                default=_CONFUSION_PAGE,
                minimum=1,
                maximum=_MAX_CONFUSION_PAGE,
            ),
        )

    @json_route
    def _serve_scores_over_time(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.scores_over_time_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "layer", "dataset"),
            neuron=index_arg(request, "neuron"),
        )

    @json_route
    def _serve_compare(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.compare_impl(
            ctx,
            experiment_id,
            **required_args(request, "run", "other_run", "layer"),
            step=step_arg(request),
            other_step=step_arg(request, "other_step"),
        )

    @json_route
    def _serve_thumbnail(
        self, request: wrappers.Request, ctx, experiment_id: str
    ) -> wrappers.Response:
        args = required_args(request, "run", "dataset")
        index = index_arg(request, "index", default=0)
        asked = request.args.get("digest")
        if asked is not None and not _DIGEST.fullmatch(asked):
            raise errors.InvalidArgumentError(
                f"digest must be the 32 hex digits of a thumbnail file's name, not {asked[:40]!r}"
            )
        data = self._step(ctx, experiment_id, args["run"], step_arg(request))
        digest = self.thumbnail_digest_impl(data, args["dataset"], index, asked)
        headers = [("Cache-Control", _CONTENT_ADDRESSED_CACHE if asked else _REVALIDATED_CACHE)]
        etag = None if digest is None else f"{digest}-{index}"
        if etag is not None:
            headers.append(("ETag", f'"{etag}"'))
            if request.if_none_match.contains_weak(etag):
                return wrappers.Response(status=304, headers=headers)
        image, media_type = _named(data, lambda: data.thumbnail_encoded(args["dataset"], index))
        return http_util.Respond(request, image, media_type, headers=headers)

    @json_route
    def _serve_static(
        self, request: wrappers.Request, ctx, experiment_id: str
    ) -> wrappers.Response:
        prefix = f"/data/plugin/{PLUGIN_NAME}/static/"
        path = request.path
        start = path.find(prefix)
        relative = path[start + len(prefix) :] if start >= 0 else ""
        normalized = posixpath.normpath(relative)
        if (
            not relative
            or normalized.startswith(("/", ".."))
            or "\\" in relative
            or normalized != relative
        ):
            raise errors.NotFoundError(f"no static file {relative!r}")
        full = os.path.join(_STATIC_DIR, *normalized.split("/"))
        if not os.path.isfile(full):
            raise errors.NotFoundError(f"no static file {relative!r}")
        with open(full, "rb") as handle:
            content = handle.read()
        mimetype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if full.endswith(".js"):
            mimetype = "text/javascript"
        return http_util.Respond(request, content, mimetype)


def _blob_sample_limit(flags) -> int | None:
    """How many records per tag this TensorBoard keeps: ``--samples_per_plugin``'s value
    for the plugin, else TensorBoard's default; None: all (``deephys=0``)."""
    hints = getattr(flags, "samples_per_plugin", None)
    limit = hints.get(PLUGIN_NAME) if isinstance(hints, Mapping) else None
    if limit is None:
        return DEFAULT_BLOB_SAMPLES
    return None if int(limit) <= 0 else int(limit)


_T = TypeVar("_T")


def _named(data: StepData, read: Callable[[], _T]) -> _T:
    """``read()``; a thumbnail ``NotFoundError`` that does not name the run and step
    (a file found changed after it was opened) is said again with them."""
    try:
        return read()
    except errors.NotFoundError as error:
        if str(error).startswith(f"run {data.run!r}"):
            raise
        raise errors.NotFoundError(f"run {data.run!r}, step {data.step}: {error}") from None


def _header(data: StepData, layer: str) -> dict[str, Any]:
    """The fields every per-step answer starts with."""
    return {
        "run": data.run,
        "layer": layer,
        "step": data.step,
        "stage": data.record.stage,
        "class_names": list(data.record.class_names),
    }


def _side(data: StepData) -> dict[str, Any]:
    """One side of a comparison: which record it is."""
    return {
        "run": data.run,
        "step": data.step,
        "epoch": data.record.epoch,
        "stage": data.record.stage,
    }


def _why_not_comparable(a: StepData, b: StepData, layer: str) -> str | None:
    """Why records ``a`` and ``b`` cannot be compared on ``layer`` neuron by neuron
    (None: they can): the layer in both, the same sets in the same order, InD first,
    and the same number of neurons."""

    def name(data: StepData) -> str:
        return f"run {data.run!r} at step {data.step}"

    for side, data in (("A", a), ("B", b)):
        if layer not in data.record.layers:
            return (
                f"layer {layer!r} was not recorded in {side} ({name(data)}); "
                f"its layers: {', '.join(data.record.layers)}"
            )
    if a.record.datasets != b.record.datasets:
        return (
            f"the datasets differ: A ({name(a)}) has {', '.join(a.record.datasets)}, "
            f"B ({name(b)}) has {', '.join(b.record.datasets)} (the same names in the "
            "same order, InD first, are needed)"
        )
    width_a, width_b = a.num_neurons(layer), b.num_neurons(layer)
    if width_a != width_b:
        return (
            f"layer {layer!r} has {width_a} neurons in A ({name(a)}) and {width_b} in B "
            f"({name(b)}): neurons are matched by index, so the widths must be equal"
        )
    return None


def _image_list(top: TopImages, maps: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The entries of top images; with ``maps`` (``[k', h, w]``, for the first ``k'``
    images: maps are kept for a neuron's first ``MAPPED_IMAGES`` top images), each of
    those with ``"map": {"shape": [h, w], "values": [h * w raw activations]}``."""
    entries: list[dict[str, Any]] = [
        {
            "index": int(index),
            "activation": _finite(activation),
            "normalized": _finite(normalized),
            "label": int(label),
            "prediction": _class_or_none(prediction),
        }
        for index, activation, normalized, label, prediction in zip(
            top.indices.tolist(),
            top.activations.tolist(),
            top.normalized.tolist(),
            top.labels.tolist(),
            top.predictions.tolist(),
            strict=True,
        )
    ]
    if maps is not None:
        shape = list(maps.shape[1:])
        for entry, cells in zip(entries, maps.reshape(len(maps), -1), strict=False):
            entry["map"] = {"shape": shape, "values": _finite_list(cells)}
    return entries


# Why an image view shows no contributions: the layer has no checked linear head.
_NO_HEAD = (
    "this layer feeds no linear head the callback could check against the recorded "
    "logits (a convolution, a layer with another between it and the head, a ReLU the "
    "recording adds and the model does not, or a log written before 0.3); name the head "
    "with DeephysCallback(head=...)"
)


def _pushes(found: Pushes | None) -> dict[str, Any]:
    """What pushed an image's prediction, for JSON (or why it is not known)."""
    if found is None:
        return {"available": False, "why": _NO_HEAD}

    def listed(top: TopNeurons) -> list[dict[str, Any]]:
        return [
            {"neuron": int(neuron), "value": _finite(value)}
            for neuron, value in zip(top.neurons.tolist(), top.values.tolist(), strict=True)
        ]

    return {
        "available": True,
        "why": None,
        "margin": _finite(found.margin),
        "predicted": listed(found.predicted),
        "label": listed(found.label),
    }


def _pair_pushes(
    data: StepData, layer: str, dataset: str, label: int, pred: int | None, either: bool
) -> dict[str, Any] | None:
    """For a directed confusion set, its top mean contributions to the margin of
    ``pred`` over ``label`` (or why there are none); None for a category."""
    if pred is None or either or pred == label:
        return None
    found = data.pair_pushes(layer, dataset, label, pred)
    if found is None:
        return {"available": False, "why": _NO_HEAD if not data.has_head(layer) else "no image"}
    return {"available": True, "why": None, "neurons": _neuron_list(found, "mean")}


def _class_or_none(prediction: Any) -> int | None:
    """A predicted class for JSON: None (null) where the image has none (its classifier
    outputs are not finite)."""
    value = int(prediction)
    return None if value == derived.NO_PREDICTION else value


def _left_out_list(rows: list[LeftOut]) -> list[dict[str, Any]]:
    """The images left out for values that are not finite, for JSON: each row's
    fields and its sentence (``LeftOut.describe``)."""
    return [
        {"layer": row.layer, "cause": row.cause, "images": row.images, "text": row.describe()}
        for row in rows
    ]


def _prediction_list(top: TopPredictions | None) -> list[dict[str, Any]] | None:
    if top is None:
        return None
    return [
        {"label": int(label), "probability": _finite(probability)}
        for label, probability in zip(top.classes.tolist(), top.probabilities.tolist(), strict=True)
    ]


def _mistakes(
    data: StepData, dataset: str, found: Mistakes, fp_page: int, fn_page: int
) -> dict[str, Any]:
    """A category's false positives and false negatives for the category route: the
    count of each and its page (``fp_page``, ``fn_page``) of ``_MISTAKES_SHOWN``, most
    confident first."""
    confidence = found.confidence
    order = "index" if confidence is None else "confidence"

    def listed(members: np.ndarray, page: int, what: str) -> dict[str, Any]:
        data.check_page(page, _MISTAKES_SHOWN, len(members), noun=what)
        start = page * _MISTAKES_SHOWN
        shown = members[start : start + _MISTAKES_SHOWN]
        images = _members_list(data, dataset, shown)
        for image, i in zip(images, shown.tolist(), strict=True):
            image["confidence"] = None if confidence is None else _finite(confidence[i])
        return {
            "count": len(members),
            "sorted_by": order,
            "page": page,
            "page_size": _MISTAKES_SHOWN,
            "images": images,
        }

    return {
        "false_positives": listed(found.false_positives, fp_page, "false positive"),
        "false_negatives": listed(found.false_negatives, fn_page, "false negative"),
    }


def _members_list(data: StepData, dataset: str, members: np.ndarray) -> list[dict[str, Any]]:
    """Images ``members`` of ``dataset`` with their label and prediction."""
    labels, preds = data.labels(dataset), data.predictions(dataset)
    return [
        {"index": i, "label": int(labels[i]), "prediction": _class_or_none(preds[i])}
        for i in members.tolist()
    ]


def _kept_list(kept: KeptActivation) -> list[dict[str, Any]]:
    """The InD top neurons of a category on one set (``StepData.kept_activation``)."""
    return [
        {"neuron": j, "ind_mean": _finite(a), "mean": _finite(b), "kept": _finite(c), "lost": d}
        for j, a, b, c, d in zip(
            kept.neurons.tolist(),
            kept.ind_means.tolist(),
            kept.set_means.tolist(),
            kept.kept.tolist(),
            kept.lost.tolist(),
            strict=True,
        )
    ]


def _confusion_summary(data: StepData, dataset: str) -> dict[str, Any]:
    """A dataset's confusion for the summary route: the dense matrix (``[C][C]``) up to
    ``derived.DENSE_CONFUSION_CLASSES`` classes, else None; for any number of classes,
    how many off-diagonal cells hold images and how many images they hold, and the
    ``_TOP_CONFUSIONS`` most frequent of them (the confusion route has every cell)."""
    dense = len(data.record.class_names) <= derived.DENSE_CONFUSION_CLASSES
    cells = data.confusion_cells(dataset)
    confused = cells[cells[:, 0] != cells[:, 1]]
    return {
        "confusion": data.confusion_matrix(dataset).tolist() if dense else None,
        "confused_pairs": len(confused),
        "misclassified": int(confused[:, 2].sum()),
        "top_confusions": _cell_list(confused[:_TOP_CONFUSIONS]),
    }


def _cell_list(cells: np.ndarray) -> list[dict[str, int]]:
    """Confusion cells (``[K, 3]``: true, predicted, count) as the routes send them."""
    return [{"label": a, "pred": b, "count": n} for a, b, n in cells.tolist()]


def _calibration(found: Calibration | None, ind_accuracy: float) -> dict[str, Any] | None:
    """A dataset's calibration for JSON (NaN as null), with its accuracy drop from the
    InD set's; None where the step lacks it."""
    if found is None:
        return None
    fields = {
        name: _finite(value) if isinstance(value, float) else value
        for name, value in dataclasses.asdict(found).items()
    }
    return {**fields, "accuracy_drop": _finite(ind_accuracy - found.accuracy)}


def _detection_row(row: Detection) -> dict[str, Any]:
    return {
        name: _finite(value) if isinstance(value, float) else value
        for name, value in dataclasses.asdict(row).items()
    }


def _category_list(top: TopCategories) -> list[dict[str, Any]]:
    return [
        {"label": int(label), "mean": _finite(mean), "normalized": _finite(normalized)}
        for label, mean, normalized in zip(
            top.labels.tolist(), top.means.tolist(), top.normalized.tolist(), strict=True
        )
    ]


def _beyond_the_top(neuron: Neuron, dataset: str, k: int | None) -> dict[str, Any]:
    """A neuron route's dataset fields beyond its top images: the fraction of images it
    fires on, its histogram, its ``k`` lowest images and its interval examples; each
    None where the step lacks it (a log written before them)."""
    fractions = neuron.data.fire_fraction(neuron.layer, dataset)
    histogram = neuron.activation_histogram(dataset)
    bottom = neuron.bottom_images(dataset, k)
    intervals = neuron.intervals(dataset)
    return {
        "fire_fraction": None if fractions is None else _finite(fractions[neuron.index]),
        "distribution": None
        if histogram is None
        else {"edges": _finite_list(histogram.edges), "counts": histogram.counts.tolist()},
        "bottom_images": None if bottom is None else _image_list(bottom),
        "intervals": None
        if intervals is None
        else [
            {"low": _finite(i.low), "high": _finite(i.high), "images": _image_list(i.images)}
            for i in intervals
        ],
    }


def _neuron_list(top: TopNeurons, value_name: str) -> list[dict[str, Any]]:
    return [
        {"neuron": int(neuron), value_name: _finite(value)}
        for neuron, value in zip(top.neurons.tolist(), top.values.tolist(), strict=True)
    ]


def _finite(value: float) -> float | int | None:
    """A JSON number: NaN and infinities become null, integers stay integers."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(values, np.float64).tolist()]
