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

from tb_plugin.metadata import PLUGIN_NAME, Kind, Record
from tb_plugin.records import DeephysReader

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MAX_K = 1000
_IMMUTABLE_CACHE = "private, max-age=86400"


def _json_route(handler: Callable) -> Callable:
    """Wrap a route: JSON errors with the right 4xx code instead of tracebacks."""

    @functools.wraps(handler)
    @wrappers.Request.application
    def route(self, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except errors.PublicError as error:
            return http_util.Respond(
                request, {"error": str(error)}, "application/json", code=error.http_code
            )

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


class DeephysPlugin(base_plugin.TBPlugin):
    """Serves the Deephys tab: comparative neuron views of InD and OOD datasets."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._reader = DeephysReader(context.data_provider)

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/neuron": self._serve_neuron,
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

    def thumbnail_impl(
        self, ctx, experiment_id: str, run: str, dataset: str, index: int, step: int | None
    ) -> bytes:
        """PNG bytes of image ``index`` of ``dataset``."""
        record = self._reader.record(ctx, experiment_id, run, step)
        _check_dataset(record, dataset)
        thumbs = self._reader.array(
            ctx, experiment_id, run, Kind.THUMBNAILS, step=record.step, dataset=dataset
        )
        if index >= len(thumbs):
            raise errors.InvalidArgumentError(
                f"image index {index} is out of range: {dataset!r} has {len(thumbs)} images"
            )
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
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        body = self.runs_impl(ctx, plugin_util.experiment_id(request.environ))
        return http_util.Respond(request, body, "application/json")

    @_json_route
    def _serve_neuron(self, request: wrappers.Request) -> wrappers.Response:
        body = self.neuron_impl(
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
            run=_arg(request, "run"),
            layer=_arg(request, "layer"),
            neuron=_int_arg(request, "neuron", default=0, maximum=2**31 - 1),
            step=_int_arg(request, "step", maximum=2**62),
            k=_int_arg(request, "k", minimum=1, maximum=_MAX_K),
        )
        return http_util.Respond(request, body, "application/json")

    @_json_route
    def _serve_thumbnail(self, request: wrappers.Request) -> wrappers.Response:
        png = self.thumbnail_impl(
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
            run=_arg(request, "run"),
            dataset=_arg(request, "dataset"),
            index=_int_arg(request, "index", default=0, maximum=2**31 - 1),
            step=_int_arg(request, "step", maximum=2**62),
        )
        response = http_util.Respond(request, png, "image/png")
        response.headers["Cache-Control"] = _IMMUTABLE_CACHE
        return response

    @_json_route
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
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


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _ratio(value: float, ind_max: float) -> float | None:
    """``value / ind_max``; None for a neuron dead on InD (``ind_max == 0``)."""
    if not np.isfinite(ind_max) or ind_max <= 0:
        return None
    return _finite(value / ind_max)
