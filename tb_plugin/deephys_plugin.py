"""The Deephys TensorBoard plugin: JSON routes and the static frontend.

TensorBoard loads it through the ``tensorboard_plugins`` entry point. Routes live
under ``/data/plugin/deephys/`` and are documented in ``docs/http_api.md``. Each
route is a thin wrapper over an ``*_impl`` method that returns plain data, so the
logic is testable without HTTP.

Example::

    tensorboard --logdir lightning_logs    # then open the "Deephys" tab
    curl 'http://localhost:6006/data/plugin/deephys/neuron?run=version_0&layer=fc1&neuron=3'
"""

from __future__ import annotations

import functools
import io
import mimetypes
import os
import posixpath
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_plugin.metadata import PLUGIN_NAME, SCORE_KINDS, Kind, Record
from tb_plugin.records import DEFAULT_CACHE_BYTES, DeephysReader

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MAX_K = 1000
_MAX_INDEX = 2**31 - 1
_IMMUTABLE_CACHE = "private, max-age=86400"


def _json_route(handler: Callable) -> Callable:
    """Wrap a route: it gets the request context and experiment id, and returns
    either a response or data sent as JSON; errors become JSON with their 4xx code
    instead of tracebacks."""

    @functools.wraps(handler)
    @wrappers.Request.application
    def route(self, request: wrappers.Request) -> wrappers.Response:
        try:
            result = handler(
                self,
                request,
                plugin_util.context(request.environ),
                plugin_util.experiment_id(request.environ),
            )
        except errors.PublicError as error:
            return http_util.Respond(
                request, {"error": str(error)}, "application/json", code=error.http_code
            )
        if isinstance(result, wrappers.Response):
            return result
        return http_util.Respond(request, result, "application/json")

    return route


def _arg(request: wrappers.Request, name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise errors.InvalidArgumentError(f"missing query parameter {name!r}")
    return value


def _int_arg(
    request: wrappers.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgumentError(
            f"query parameter {name!r} must be an integer, got {raw[:40]!r}"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise errors.InvalidArgumentError(f"query parameter {name!r} must be {bound}, got {value}")
    return value


def _step_arg(request: wrappers.Request) -> int | None:
    return _int_arg(request, "step", maximum=2**62)


class DeephysPlugin(base_plugin.TBPlugin):
    """Serves the Deephys tab: comparative neuron views of InD and OOD datasets."""

    plugin_name = PLUGIN_NAME

    def __init__(
        self, context: base_plugin.TBContext, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self._reader = DeephysReader(
            context.data_provider, logdir=context.logdir, cache_bytes=cache_bytes
        )

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/neuron": self._serve_neuron,
            "/summary": self._serve_summary,
            "/image": self._serve_image,
            "/category": self._serve_category,
            "/scores_over_time": self._serve_scores_over_time,
            "/thumbnail": self._serve_thumbnail,
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

    def runs_impl(self, ctx, experiment_id: str) -> dict[str, Any]:
        runs = []
        for run in self._reader.index(ctx, experiment_id):
            records = self._reader.records(ctx, experiment_id, run)
            if not records:
                continue
            latest = records[-1]
            runs.append(
                {
                    "run": run,
                    "steps": [{"step": r.step, "epoch": r.epoch} for r in records],
                    "layers": list(latest.layers),
                    "datasets": list(latest.datasets),
                    "ind": latest.ind,
                    "class_names": list(latest.class_names),
                    "num_images": latest.num_images,
                    "top_k": latest.top_k,
                }
            )
        return {"runs": runs}

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
        """Top images of one neuron in every dataset, normalised by the InD maximum."""
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_layer(record, layer)
        k = record.top_k if k is None else min(k, record.top_k)

        def top(dataset: str) -> tuple[np.ndarray, np.ndarray]:
            indices = self._array(ctx, experiment_id, run, record, Kind.TOP_INDICES, layer, dataset)
            values = self._array(ctx, experiment_id, run, record, Kind.TOP_VALUES, layer, dataset)
            return indices, values

        ind_indices, ind_values = top(record.ind)
        num_neurons = ind_indices.shape[0]
        if neuron >= num_neurons:
            raise errors.InvalidArgumentError(
                f"neuron {neuron} is out of range: layer {layer!r} has {num_neurons} neurons"
            )
        ind_max = float(ind_values[neuron, 0]) if ind_values.shape[1] else 0.0
        datasets = []
        for dataset in record.datasets:
            indices, values = (ind_indices, ind_values) if dataset == record.ind else top(dataset)
            labels = self._array(ctx, experiment_id, run, record, Kind.LABELS, None, dataset)
            preds = self._array(ctx, experiment_id, run, record, Kind.PREDICTIONS, None, dataset)
            images = []
            for index, value in zip(
                indices[neuron, :k].tolist(), values[neuron, :k].tolist(), strict=True
            ):
                images.append(
                    {
                        "index": int(index),
                        "activation": _finite(value),
                        "normalized": _ratio(value, ind_max),
                        "label": int(labels[index]),
                        "prediction": int(preds[index]),
                    }
                )
            top_value = float(values[neuron, 0]) if values.shape[1] else 0.0
            entry = {
                "name": dataset,
                "role": "ind" if dataset == record.ind else "ood",
                "activation_ratio": None,
                "novelty": None,
                "spurious": None,
                "images": images,
            }
            if dataset != record.ind:
                entry["activation_ratio"] = _ratio(top_value, ind_max)
                for kind in (Kind.NOVELTY, Kind.SPURIOUS):
                    scores = self._array(ctx, experiment_id, run, record, kind, layer, dataset)
                    entry[kind.value] = _finite(float(scores[neuron]))
            datasets.append(entry)
        return {
            "run": run,
            "layer": layer,
            "step": record.step,
            "epoch": record.epoch,
            "neuron": neuron,
            "num_neurons": num_neurons,
            "ind_max": _finite(ind_max),
            "class_names": list(record.class_names),
            "datasets": datasets,
        }

    def summary_impl(
        self, ctx, experiment_id: str, run: str, layer: str, step: int | None = None
    ) -> dict[str, Any]:
        """Accuracy and confusion matrix per dataset; per OOD set, every neuron's scores
        and their densities."""
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_layer(record, layer)
        num_classes = len(record.class_names)
        datasets = []
        for dataset in record.datasets:
            labels = self._array(ctx, experiment_id, run, record, Kind.LABELS, None, dataset)
            preds = self._array(ctx, experiment_id, run, record, Kind.PREDICTIONS, None, dataset)
            confusion = np.bincount(
                labels.astype(np.int64) * num_classes + preds.astype(np.int64),
                minlength=num_classes * num_classes,
            )[: num_classes * num_classes].reshape(num_classes, num_classes)
            entry: dict[str, Any] = {
                "name": dataset,
                "role": "ind" if dataset == record.ind else "ood",
                "num_images": len(labels),
                "accuracy": _finite(float(np.mean(labels == preds))) if len(labels) else None,
                "confusion": confusion.tolist(),
            }
            if dataset != record.ind:
                scores = {
                    kind.value: self._array(ctx, experiment_id, run, record, kind, layer, dataset)
                    for kind in SCORE_KINDS
                }
                entry["scores"] = {name: _finite_list(v) for name, v in scores.items()}
                novelty, spurious = scores["novelty"], scores["spurious"]
                entry["summary"] = {
                    "novelty_mean": _finite_mean(novelty),
                    "novelty_positive_fraction": _finite(
                        float(np.mean(novelty[np.isfinite(novelty)] > 0))
                    )
                    if np.isfinite(novelty).any()
                    else None,
                    "spurious_mean": _finite_mean(spurious),
                    "spurious_undefined": int(np.sum(~np.isfinite(spurious))),
                    "activation_ratio_mean": _finite_mean(scores["activation_ratio"]),
                }
                positive = novelty[np.isfinite(novelty) & (novelty > 0)]
                entry["densities"] = {
                    "novelty": _density(positive),
                    "spurious": _density(spurious[np.isfinite(spurious)], (0.0, 1.0)),
                }
            datasets.append(entry)
        return {
            "run": run,
            "layer": layer,
            "step": record.step,
            "epoch": record.epoch,
            "class_names": list(record.class_names),
            "num_neurons": self._num_neurons(ctx, experiment_id, run, record, layer),
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
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_layer(record, layer)
        _check_dataset(record, dataset)
        labels = self._array(ctx, experiment_id, run, record, Kind.LABELS, None, dataset)
        _check_index(index, len(labels), dataset)
        preds = self._array(ctx, experiment_id, run, record, Kind.PREDICTIONS, None, dataset)
        neurons = self._array(
            ctx, experiment_id, run, record, Kind.IMAGE_TOP_NEURONS, layer, dataset
        )
        normalized = self._array(
            ctx, experiment_id, run, record, Kind.IMAGE_TOP_VALUES, layer, dataset
        )
        positions = self._array(ctx, experiment_id, run, record, Kind.POSITIONS, None, dataset)
        ind_values = self._array(
            ctx, experiment_id, run, record, Kind.TOP_VALUES, layer, record.ind
        )
        sources = [record.ind] + ([dataset] if dataset != record.ind else [])
        tops = {}
        for source in sources:
            tops[source] = (
                self._array(ctx, experiment_id, run, record, Kind.TOP_INDICES, layer, source),
                self._array(ctx, experiment_id, run, record, Kind.TOP_VALUES, layer, source),
                self._array(ctx, experiment_id, run, record, Kind.LABELS, None, source),
                self._array(ctx, experiment_id, run, record, Kind.PREDICTIONS, None, source),
            )
        top_neurons = []
        for neuron, value in zip(
            neurons[index, :n].tolist(), normalized[index, :n].tolist(), strict=True
        ):
            ind_max = float(ind_values[neuron, 0]) if ind_values.shape[1] else 0.0
            top_images = {}
            for source, (indices, values, src_labels, src_preds) in tops.items():
                top_images[source] = [
                    {
                        "index": int(i),
                        "normalized": _ratio(v, ind_max),
                        "label": int(src_labels[i]),
                        "prediction": int(src_preds[i]),
                    }
                    for i, v in zip(
                        indices[neuron, :k].tolist(), values[neuron, :k].tolist(), strict=True
                    )
                ]
            top_neurons.append(
                {"neuron": int(neuron), "normalized": _finite(value), "top_images": top_images}
            )
        return {
            "run": run,
            "layer": layer,
            "step": record.step,
            "dataset": dataset,
            "role": "ind" if dataset == record.ind else "ood",
            "index": index,
            "position": int(positions[index]),
            "label": int(labels[index]),
            "prediction": int(preds[index]),
            "class_names": list(record.class_names),
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
    ) -> dict[str, Any]:
        """A category (``label``) or a confusion set (``label`` predicted as ``pred``):
        neurons ranked by mean activation over its images, and its images, paginated."""
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_layer(record, layer)
        _check_dataset(record, dataset)
        num_classes = len(record.class_names)
        for name, value in (("label", label), ("pred", pred)):
            if value is not None and value >= num_classes:
                raise errors.InvalidArgumentError(
                    f"{name} {value} is out of range: there are {num_classes} classes"
                )
        labels = self._array(ctx, experiment_id, run, record, Kind.LABELS, None, dataset)
        preds = self._array(ctx, experiment_id, run, record, Kind.PREDICTIONS, None, dataset)
        members = labels == label if pred is None else (labels == label) & (preds == pred)
        indices = np.flatnonzero(members)
        if pred is None:
            means = self._array(
                ctx, experiment_id, run, record, Kind.CATEGORY_MEANS, layer, dataset
            )[label]
            order = sorted(
                range(len(means)),
                key=lambda j: (not np.isfinite(means[j]), -float(np.nan_to_num(means[j])), j),
            )[:16]
            neurons = [{"neuron": j, "mean": _finite(float(means[j]))} for j in order]
        else:
            pairs = self._array(ctx, experiment_id, run, record, Kind.PAIRS, layer, dataset)
            row = np.flatnonzero((pairs[:, 0] == label) & (pairs[:, 1] == pred))
            if not len(row):
                raise errors.NotFoundError(
                    f"no image of {dataset!r} has label {label} and prediction {pred}"
                )
            top = self._array(
                ctx, experiment_id, run, record, Kind.PAIR_TOP_NEURONS, layer, dataset
            )[row[0]]
            top_means = self._array(
                ctx, experiment_id, run, record, Kind.PAIR_TOP_MEANS, layer, dataset
            )[row[0]]
            neurons = [
                {"neuron": int(j), "mean": _finite(float(v))}
                for j, v in zip(top.tolist(), top_means.tolist(), strict=True)
            ]
        start = page * page_size
        images = [
            {"index": int(i), "label": int(labels[i]), "prediction": int(preds[i])}
            for i in indices[start : start + page_size]
        ]
        return {
            "run": run,
            "layer": layer,
            "step": record.step,
            "dataset": dataset,
            "label": label,
            "pred": pred,
            "class_names": list(record.class_names),
            "num_images": len(indices),
            "page": page,
            "page_size": page_size,
            "neurons": neurons,
            "images": images,
        }

    def scores_over_time_impl(
        self, ctx, experiment_id: str, run: str, layer: str, dataset: str, neuron: int | None
    ) -> dict[str, Any]:
        """Per recorded step: mean scores of an OOD set, or one neuron's scores."""
        points = []
        for record in self._reader.records(ctx, experiment_id, run):
            if layer not in record.layers or dataset not in record.ood:
                continue
            try:
                scores = {
                    kind.value: self._array(ctx, experiment_id, run, record, kind, layer, dataset)
                    for kind in SCORE_KINDS
                }
            except errors.NotFoundError:
                continue  # this step was sampled out for some tag
            if neuron is not None:
                if neuron >= len(scores["novelty"]):
                    raise errors.InvalidArgumentError(
                        f"neuron {neuron} is out of range: layer {layer!r} has "
                        f"{len(scores['novelty'])} neurons"
                    )
                values = {name: _finite(float(v[neuron])) for name, v in scores.items()}
            else:
                values = {name: _finite_mean(v) for name, v in scores.items()}
            points.append({"step": record.step, "epoch": record.epoch, **values})
        if not points:
            raise errors.NotFoundError(
                f"run {run!r} has no scores for layer {layer!r} on OOD set {dataset!r}"
            )
        return {"run": run, "layer": layer, "dataset": dataset, "neuron": neuron, "points": points}

    def _num_neurons(self, ctx, experiment_id, run, record: Record, layer: str) -> int:
        top = self._array(ctx, experiment_id, run, record, Kind.TOP_INDICES, layer, record.ind)
        return int(top.shape[0])

    def thumbnail_impl(
        self, ctx, experiment_id: str, run: str, dataset: str, index: int, step: int | None
    ) -> bytes:
        """PNG bytes of image ``index`` of ``dataset``."""
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_dataset(record, dataset)
        thumbs = self._reader.thumbnails(ctx, experiment_id, run, dataset, record.step)
        _check_index(index, len(thumbs), dataset)
        out = io.BytesIO()
        Image.fromarray(np.asarray(thumbs[index], dtype=np.uint8), mode="RGB").save(
            out, format="PNG"
        )
        return out.getvalue()

    def _array(self, ctx, experiment_id, run, record: Record, kind, layer, dataset) -> np.ndarray:
        return self._reader.array(
            ctx, experiment_id, run, kind, step=record.step, layer=layer, dataset=dataset
        )

    # -- routes (thin) -----------------------------------------------------------------

    @_json_route
    def _serve_runs(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.runs_impl(ctx, experiment_id)

    @_json_route
    def _serve_summary(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.summary_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            step=_step_arg(request),
        )

    @_json_route
    def _serve_neuron(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.neuron_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            neuron=_int_arg(request, "neuron", default=0, maximum=_MAX_INDEX),
            step=_step_arg(request),
            k=_int_arg(request, "k", minimum=1, maximum=_MAX_K),
        )

    @_json_route
    def _serve_image(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.image_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            dataset=_arg(request, "dataset"),
            index=_int_arg(request, "index", default=0, maximum=_MAX_INDEX),
            step=_step_arg(request),
            n=_int_arg(request, "n", default=10, minimum=1, maximum=100),
            k=_int_arg(request, "k", default=6, minimum=1, maximum=_MAX_K),
        )

    @_json_route
    def _serve_category(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.category_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            dataset=_arg(request, "dataset"),
            label=_int_arg(request, "label", default=0, maximum=_MAX_INDEX),
            pred=_int_arg(request, "pred", maximum=_MAX_INDEX),
            step=_step_arg(request),
            page=_int_arg(request, "page", default=0, maximum=_MAX_INDEX),
            page_size=_int_arg(request, "page_size", default=50, minimum=1, maximum=500),
        )

    @_json_route
    def _serve_scores_over_time(self, request: wrappers.Request, ctx, experiment_id: str) -> dict:
        return self.scores_over_time_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            dataset=_arg(request, "dataset"),
            neuron=_int_arg(request, "neuron", maximum=_MAX_INDEX),
        )

    @_json_route
    def _serve_thumbnail(
        self, request: wrappers.Request, ctx, experiment_id: str
    ) -> wrappers.Response:
        png = self.thumbnail_impl(
            ctx,
            experiment_id,
            run=_arg(request, "run"),
            dataset=_arg(request, "dataset"),
            index=_int_arg(request, "index", default=0, maximum=_MAX_INDEX),
            step=_step_arg(request),
        )
        response = http_util.Respond(request, png, "image/png")
        response.headers["Cache-Control"] = _IMMUTABLE_CACHE
        return response

    @_json_route
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


def _check_layer(record: Record, layer: str) -> None:
    if layer not in record.layers:
        raise errors.NotFoundError(
            f"layer {layer!r} was not recorded at step {record.step}; layers: {list(record.layers)}"
        )


def _check_dataset(record: Record, dataset: str) -> None:
    if dataset not in record.datasets:
        raise errors.NotFoundError(
            f"dataset {dataset!r} was not recorded at step {record.step}; "
            f"datasets: {list(record.datasets)}"
        )


def _check_index(index: int, count: int, dataset: str) -> None:
    if index >= count:
        raise errors.InvalidArgumentError(
            f"image index {index} is out of range: {dataset!r} has {count} images"
        )


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values.tolist()]


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean(dtype=np.float64)) if finite.size else None


def _density(values: np.ndarray, bounds: tuple[float, float] | None = None) -> dict:
    """A 20-bin histogram normalised to a density (the paper's Fig. 3 plots)."""
    if not values.size:
        return {"edges": [], "density": [], "count": 0}
    low, high = bounds if bounds is not None else (0.0, float(values.max()) or 1.0)
    density, edges = np.histogram(values, bins=20, range=(low, high), density=True)
    return {"edges": edges.tolist(), "density": _finite_list(density), "count": int(values.size)}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _ratio(value: float, ind_max: float) -> float | None:
    """``value / ind_max``; None for a neuron dead on InD (``ind_max == 0``)."""
    if not np.isfinite(ind_max) or ind_max <= 0:
        return None
    return _finite(value / ind_max)
