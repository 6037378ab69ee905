"""The Deephys log format: the one place that knows how a log is laid out.

Plugin name, content version, kinds and tags; the record; how arrays become blob
chunks; the asset files beside the events (thumbnails, their reference in the
events) and the callback's resume state. Both sides import this module: the writer
(``deephys_lightning.writing``, the callback) and the readers
(``tensorboard_plugin_deephys.log.records`` and
``tensorboard_plugin_deephys.log.read_model``, used by the TensorBoard plugin and by
``deephys_lightning.read_log``). It needs only NumPy and the protobufs TensorBoard
ships. ``docs/data_format.md`` is its contract.

Every Deephys summary carries ``plugin_data.plugin_name = "deephys"`` and a JSON
content that says what the value is (its ``kind``), for which layer and dataset.
Readers find data by this content, never by parsing tag names, and skip content
versions newer than they know.

Example::

    >>> from tensorboard_plugin_deephys.log import metadata
    >>> md = metadata.create_summary_metadata(metadata.Kind.LABELS, dataset="mnist")
    >>> metadata.parse_plugin_content(md.plugin_data.content).dataset
    'mnist'
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
import re
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import quote

import numpy as np
from tensorboard.compat.proto import summary_pb2

from tensorboard_plugin_deephys.log import npy, storage
from tensorboard_plugin_deephys.log.derived import NO_PREDICTION  # noqa: F401 (one name)
from tensorboard_plugin_deephys.log.json_documents import (
    MAX_CONTENT_BYTES,
    Fields,
    MalformedDocument,
    items,
    parse_json,
)

PLUGIN_NAME = "deephys"
# Bump when the meaning of a kind changes; readers skip contents newer than this.
CONTENT_VERSION = 1
# Blob sequences hold byte chunks of one .npy stream; no chunk is larger than this.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
# How many top neurons are kept per image and per confusion pair (and shown per
# category): the second dimension of IMAGE_TOP_* and PAIR_TOP_*.
TOP_NEURONS = 16
# Images per neuron with a map of where it fires (TOP_MAPS): its first top images, as
# many as the views show by default and then some; more would cost more log than all
# the other view data together at ImageNet scale (docs/scaling.md).
MAPPED_IMAGES = 16
# How many most probable classes are kept per image: the second dimension of
# TOP_CLASSES and TOP_PROBABILITIES is min(TOP_PREDICTIONS, number of classifier outputs).
TOP_PREDICTIONS = 5
# Each neuron's activation histogram has this many bins (ACTIVATION_COUNTS's second
# dimension); its interval examples are INTERVAL_IMAGES images in each of INTERVAL_BANDS
# bands of equal width (INTERVAL_INDICES [M, INTERVAL_BANDS, INTERVAL_IMAGES]). Readers
# take the sizes from the stored shapes.
HISTOGRAM_BINS = 32
INTERVAL_BANDS = 5
INTERVAL_IMAGES = 4


class Kind(str, enum.Enum):
    """What one Deephys tag holds. The value is written into the plugin content."""

    RECORD = "record"  # JSON description of one recorded validation epoch (blob)
    LABELS = "labels"  # int32 [N] ground-truth class per image (tensor)
    PREDICTIONS = "predictions"  # int32 [N] predicted class per image (tensor)
    THUMBNAILS = "thumbnails"  # JSON ThumbnailReference to an asset file (blob)
    ACTIVATIONS = "activations"  # float16 [N, M] activations of one layer (.npy blob chunks)
    TOP_INDICES = "top_indices"  # int32 [M, k] image indices, highest activation first (tensor)
    TOP_VALUES = "top_values"  # float32 [M, k] raw activations of those images (tensor)
    POSITIONS = "positions"  # int32 [N] index in the dataset of each recorded image (tensor)
    IMAGE_TOP_NEURONS = "image_top_neurons"  # int32 [N, n] each image's top neurons (tensor)
    IMAGE_TOP_VALUES = "image_top_values"  # float32 [N, n] their normalized activations (tensor)
    CATEGORY_MEANS = "category_means"  # float32 [C, M] mean activation per category (tensor)
    MAXIMA = "maxima"  # float32 [M] highest activation per neuron, NaN if any is NaN (tensor)
    # The neuron view's distributions and examples below the top (HISTOGRAM_BINS etc.).
    BOTTOM_INDICES = "bottom_indices"  # int32 [M, k] image indices, lowest activation first
    BOTTOM_VALUES = "bottom_values"  # float32 [M, k] raw activations of those images (tensor)
    HISTOGRAM_RANGE = "histogram_range"  # float32 [M, 2] shared [low, high]; InD only (tensor)
    ACTIVATION_COUNTS = "activation_counts"  # int32 [M, B] histogram over that range (tensor)
    FIRE_FRACTION = "fire_fraction"  # float32 [M] fraction of images above 0 (tensor)
    INTERVAL_INDICES = "interval_indices"  # int32 [M, bands, n] images per band, -1: none
    INTERVAL_VALUES = "interval_values"  # float32 [M, bands, n] their activations, NaN: none
    PAIRS = "pairs"  # int32 [P, 2] (true, predicted) pairs that occur (tensor)
    PAIR_TOP_NEURONS = "pair_top_neurons"  # int32 [P, n] most active neurons per pair (tensor)
    PAIR_TOP_MEANS = "pair_top_means"  # float32 [P, n] their mean activations (tensor)
    # The paper's confusion sets: images of label a predicted as b or of b predicted as a.
    CONFUSIONS = "confusions"  # int32 [S, 2] pairs (a < b) with such images (tensor)
    CONFUSION_TOP_NEURONS = "confusion_top_neurons"  # int32 [S, n] most active neurons (tensor)
    CONFUSION_TOP_MEANS = "confusion_top_means"  # float32 [S, n] their normalized means (tensor)
    # Raw novelty (the neuron's own units); the normalized novelty is derived from it.
    NOVELTY_RAW = "novelty"  # float32 [M] raw novelty of an OOD set (tensor)
    SPURIOUS = "spurious"  # float32 [M] spurious score of an OOD set, NaN = undefined (tensor)
    ACTIVATION_RATIO = "activation_ratio"  # float32 [M] OOD max / InD max (tensor)
    LOGITS = "logits"  # float32 [N, C] classifier outputs per image (.npy blob chunks)
    TOP_CLASSES = "top_classes"  # int32 [N, k] most probable classes, most probable first (tensor)
    TOP_PROBABILITIES = "top_probabilities"  # float32 [N, k] their softmax probabilities (tensor)
    DETECTION = "detection"  # JSON list of Detection rows of an OOD set (blob)
    CALIBRATION = "calibration"  # JSON Calibration of a dataset (blob)
    # Where the layer feeds a linear head (deephys_lightning.contributions): the head,
    # once per layer and step (written with the InD set), and what each neuron did to
    # each image's prediction, exactly: activation x weight.
    HEAD_WEIGHT = "head_weight"  # float32 [C', M] the head's weight; InD only (tensor)
    HEAD_BIAS = "head_bias"  # float32 [C'] its bias; InD only (tensor)
    PREDICTED_PUSH_NEURONS = "predicted_push_neurons"  # int32 [N, n] top contributions to l_p
    PREDICTED_PUSH_VALUES = "predicted_push_values"  # float32 [N, n] a_j W[p, j] (tensor)
    LABEL_PUSH_NEURONS = "label_push_neurons"  # int32 [N, n] top contributions to l_y
    LABEL_PUSH_VALUES = "label_push_values"  # float32 [N, n] a_j W[y, j] (tensor)
    MARGINS = "margins"  # float32 [N] l_p - l_y by the head, NaN without a prediction
    PAIR_PUSH_NEURONS = "pair_push_neurons"  # int32 [P, n] top mean contributions to l_b - l_a
    PAIR_PUSH_VALUES = "pair_push_values"  # float32 [P, n] those means (tensor)
    # Each neuron zeroed alone, through the head, on (a subset of) the set's images:
    ZEROED_CHANGES = "zeroed_changes"  # int32 [M] how many predictions change (tensor)
    ZEROED_ACCURACY = "zeroed_accuracy"  # float32 [M] the set's accuracy then (tensor)
    ZEROING_BASE = "zeroing_base"  # float32 [2] the head's accuracy, the images used
    # Where each neuron fires on its top images: its map over the layer's spatial dims
    # or square token grid (h, w <= 7), or other tokens (h = 1, w <= 49), after the ReLU.
    TOP_MAPS = "top_maps"  # float16 [M, k, h, w] one per top_indices entry (.npy blob chunks)


# Kinds stored as blob sequences (everything else is a tensor).
BLOB_KINDS = frozenset(
    {
        Kind.RECORD,
        Kind.THUMBNAILS,
        Kind.ACTIVATIONS,
        Kind.LOGITS,
        Kind.DETECTION,
        Kind.CALIBRATION,
        Kind.TOP_MAPS,
    }
)
# Blob kinds holding one JSON document (the others hold .npy chunks).
JSON_KINDS = frozenset({Kind.RECORD, Kind.THUMBNAILS, Kind.DETECTION, Kind.CALIBRATION})
# The neuron view's distributions, per layer and dataset: bottom k, histogram (its
# range once per layer), fire fraction, interval examples.
DISTRIBUTION_KINDS = frozenset(
    {
        Kind.BOTTOM_INDICES,
        Kind.BOTTOM_VALUES,
        Kind.HISTOGRAM_RANGE,
        Kind.ACTIVATION_COUNTS,
        Kind.FIRE_FRACTION,
        Kind.INTERVAL_INDICES,
        Kind.INTERVAL_VALUES,
    }
)
# What the layer's linear head did (deephys_lightning.contributions), where it has one.
CONTRIBUTION_KINDS = frozenset(
    {
        Kind.HEAD_WEIGHT,
        Kind.HEAD_BIAS,
        Kind.PREDICTED_PUSH_NEURONS,
        Kind.PREDICTED_PUSH_VALUES,
        Kind.LABEL_PUSH_NEURONS,
        Kind.LABEL_PUSH_VALUES,
        Kind.MARGINS,
        Kind.PAIR_PUSH_NEURONS,
        Kind.PAIR_PUSH_VALUES,
        Kind.ZEROED_CHANGES,
        Kind.ZEROED_ACCURACY,
        Kind.ZEROING_BASE,
    }
)
# Kinds written per layer (everything else but RECORD is per dataset only).
LAYER_KINDS = frozenset(
    {
        Kind.ACTIVATIONS,
        Kind.TOP_INDICES,
        Kind.TOP_VALUES,
        Kind.IMAGE_TOP_NEURONS,
        Kind.IMAGE_TOP_VALUES,
        Kind.CATEGORY_MEANS,
        Kind.MAXIMA,
        *DISTRIBUTION_KINDS,
        Kind.PAIRS,
        Kind.PAIR_TOP_NEURONS,
        Kind.PAIR_TOP_MEANS,
        Kind.CONFUSIONS,
        Kind.CONFUSION_TOP_NEURONS,
        Kind.CONFUSION_TOP_MEANS,
        Kind.NOVELTY_RAW,
        Kind.SPURIOUS,
        Kind.ACTIVATION_RATIO,
        Kind.TOP_MAPS,
        *CONTRIBUTION_KINDS,
    }
)
# Per-neuron scores stored per layer for each OOD set, and the field of
# ``tensorboard_plugin_deephys.log.derived.OODScores`` each holds (the normalized novelty
# is derived from the raw one and the InD maxima; the headline scalars are the keys of
# ``summary()``).
SCORE_KINDS = {
    Kind.NOVELTY_RAW: "novelty_raw",
    Kind.SPURIOUS: "spurious",
    Kind.ACTIVATION_RATIO: "activation_ratio",
}


# A dataset's name takes at most this many bytes in a plugin content (JSON, non-ASCII
# characters as \uXXXX escapes: 6 bytes each, 12 beyond the BMP), so that a content
# holding it, a layer's name and the rest stays within MAX_CONTENT_BYTES: 16,384
# ASCII characters, 2,730 CJK ones. The callback refuses longer names at the sanity
# check (a content over the bound would be read as malformed, its data left out).
MAX_NAME_CONTENT_BYTES = 16 * 1024


def name_content_bytes(name: str) -> int:
    """How many bytes ``name`` takes in a plugin content (see MAX_NAME_CONTENT_BYTES)."""
    return len(json.dumps(name))


@dataclasses.dataclass(frozen=True)
class PluginContent:
    """The parsed plugin content of one Deephys tag."""

    kind: Kind
    version: int = CONTENT_VERSION
    layer: str | None = None
    dataset: str | None = None


def _tag_part(name: str) -> str:
    # Layer and dataset names are user data: escape "/" so tags stay unambiguous.
    return quote(name, safe="._-")


# Plugin data live under their own tag prefix, so that they never share a tag with
# the scalars and histograms written under "deephys/" for TensorBoard's own tabs.
DATA_TAG_PREFIX = "deephys.data"


def tag_name(kind: Kind, *, layer: str | None = None, dataset: str | None = None) -> str:
    """The tag a value of ``kind`` is written under.

    Tags are for humans browsing the log; readers match on plugin content instead.
    """
    kind = Kind(kind)
    if kind is Kind.RECORD:
        return f"{DATA_TAG_PREFIX}/record"
    if kind in LAYER_KINDS:
        if layer is None or dataset is None:
            raise ValueError(f"{kind.value} tags need both a layer and a dataset")
        return f"{DATA_TAG_PREFIX}/{_tag_part(layer)}/{_tag_part(dataset)}/{kind.value}"
    if dataset is None:
        raise ValueError(f"{kind.value} tags need a dataset")
    return f"{DATA_TAG_PREFIX}/{_tag_part(dataset)}/{kind.value}"


def scalar_tag(name: str, *, layer: str | None = None, dataset: str) -> str:
    """Tag of a Deephys scalar or histogram, shown in TensorBoard's own tabs.

    ``deephys/<dataset>/<name>`` (accuracy) or ``deephys/<layer>/<ood>/<name>`` (scores).
    Names are kept readable; only "/" inside them is escaped.
    """
    parts = [dataset, name] if layer is None else [layer, dataset, name]
    return "deephys/" + "/".join(p.replace("/", "%2F") for p in parts)


def detection_tag(detector: str, metric: str, *, dataset: str, layer: str | None = None) -> str:
    """Tag of an OOD detection scalar: ``deephys/<ood>/<detector>/<metric>`` for the
    detectors on the logits, ``deephys/<layer>/<ood>/<detector>/<metric>`` for those on
    a layer's features."""
    return f"{scalar_tag(detector, layer=layer, dataset=dataset)}/{metric}"


def create_summary_metadata(
    kind: Kind, *, layer: str | None = None, dataset: str | None = None
) -> summary_pb2.SummaryMetadata:
    """A ``SummaryMetadata`` with Deephys plugin data and the right ``data_class``."""
    kind = Kind(kind)
    content = {"version": CONTENT_VERSION, "kind": kind.value}
    if layer is not None:
        content["layer"] = layer
    if dataset is not None:
        content["dataset"] = dataset
    blob = kind in BLOB_KINDS
    data_class = summary_pb2.DATA_CLASS_BLOB_SEQUENCE if blob else summary_pb2.DATA_CLASS_TENSOR
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=json.dumps(content).encode("utf-8")
        ),
        data_class=data_class,
    )


def parse_plugin_content(content: bytes) -> PluginContent | None:
    """Parse plugin content; ``None`` for contents this reader cannot read.

    Unknown (newer) versions and unknown kinds are skipped, not errors, so that an
    older TensorBoard keeps working on a log written by a newer callback; so are
    malformed ones (:func:`read_plugin_content` tells them apart).
    """
    try:
        return read_plugin_content(content)
    except MalformedDocument:
        return None


def read_plugin_content(content: bytes) -> PluginContent | None:
    """Parse plugin content: ``None`` for a newer version or an unknown kind (a newer
    callback's, skipped), :class:`MalformedDocument` for anything else that is not a
    content this version writes (not JSON, a version that is not an integer, a name
    that is not a text...; see ``json_documents``)."""
    what = "the plugin content"
    fields = Fields(parse_json(content, what, max_bytes=MAX_CONTENT_BYTES), what)
    version = fields.integer("version")
    kind = fields.text("kind")
    if version > CONTENT_VERSION or kind not in _KIND_VALUES:
        return None
    return PluginContent(
        kind=Kind(kind),
        version=version,
        layer=fields.optional_text("layer"),
        dataset=fields.optional_text("dataset"),
    )


_KIND_VALUES = frozenset(kind.value for kind in Kind)


# Why an image's values are not finite, most upstream first (LeftOut.cause):
# "input": the image itself holds NaN or an infinity; "activation": the layer's output
# (or the logits, for the predictions) is not finite in the model's own precision;
# "float16": finite in the model but beyond float16's range (65504) where the callback
# stores it; "logits": the classifier outputs are not finite, the layer's are.
LEFT_OUT_CAUSES = ("input", "activation", "float16", "logits")


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """Images of one dataset left out because some of their values are not finite.

    ``layer`` None: left out of the accuracy and the confusion matrix (their prediction
    is :data:`NO_PREDICTION`); a layer: left out of that layer's maxima, means, scores,
    distributions, top images and detectors. ``cause`` is one of
    :data:`LEFT_OUT_CAUSES`; a dataset and layer have a row per cause found.

    Example::

        >>> row = LeftOut("noisy", "fc1", "input", 100)
        >>> print(row.describe())  # doctest: +NORMALIZE_WHITESPACE
        100 images of 'noisy' with NaN or infinite activations of 'fc1' left out: the input
        images hold NaN or infinite values
    """

    dataset: str
    layer: str | None
    cause: str
    images: int

    def describe(self) -> str:
        """One sentence: how many images, where, why (as the tab and ``scores`` say it)."""
        what = (
            "classifier outputs (no prediction; not in the accuracy)"
            if self.layer is None
            else f"activations of {self.layer!r}"
        )
        image_word = "image" if self.images == 1 else "images"
        return (
            f"{self.images} {image_word} of {self.dataset!r} with NaN or infinite {what} "
            f"left out: {CAUSE_TEXT.get(self.cause, self.cause)}"
        )


CAUSE_TEXT = {
    "input": "the input images hold NaN or infinite values",
    "activation": "the layer's output is not finite in the model (the input is)",
    "float16": "finite in the model but beyond float16's range (65504), where the "
    "callback stores activations; record a layer after a normalization",
    "logits": "the classifier outputs are not finite (the input images are finite)",
}


@dataclasses.dataclass(frozen=True)
class Record:
    """What one recorded validation epoch holds: written once per step as JSON.

    ``datasets`` lists the in-distribution set first, then the OOD sets in
    dataloader order. ``num_images`` maps each dataset to its image count.
    """

    step: int
    epoch: int
    layers: tuple[str, ...]
    datasets: tuple[str, ...]
    class_names: tuple[str, ...]
    num_images: dict[str, int]
    top_k: int
    relu: bool = True
    # "normalized": the confusion sets' top neurons (PAIR_TOP_*) are ranked by the mean
    # of activations divided by the InD maxima; "raw" in logs written before.
    set_means: str = "normalized"
    # Which evaluation made the record: "fit" (validation during fit), "validate" or
    # "test"; "" in logs written before.
    stage: str = "fit"
    # Each dataset's length (None: unknown), beside num_images: fewer images were
    # recorded than the set has (max_images, limit_val_batches...).
    dataset_sizes: dict[str, int | None] = dataclasses.field(default_factory=dict)
    # The tags written at this step before the record itself (() in logs written
    # before): a reader that finds fewer knows the record is incomplete.
    arrays: tuple[str, ...] = ()
    # The step pack holding the step's arrays (``log/step_pack.py``): its asset name
    # under the run's plugins/deephys/ folder; "" where the arrays are in the events
    # (logs written before 0.3).
    pack: str = ""
    # Images left out because their values are not finite (docs/concepts.md), a row
    # per dataset, layer (None: the predictions) and cause; () where none (or in logs
    # written before 0.3, which kept them in and let NaN spread).
    left_out: tuple[LeftOut, ...] = ()
    version: int = CONTENT_VERSION

    @property
    def ind(self) -> str:
        """Name of the in-distribution dataset."""
        return self.datasets[0]

    @property
    def ood(self) -> tuple[str, ...]:
        """Names of the out-of-distribution datasets, in dataloader order."""
        return self.datasets[1:]

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Record | None:
        """Parse a record; ``None`` for a newer version or a malformed one (fields
        missing or of the wrong type, no layer, dataset or class)."""
        try:
            return cls.parse(raw)
        except MalformedDocument:
            return None

    @classmethod
    def parse(cls, raw: bytes, what: str = "the record") -> Record | None:
        """Parse a record; ``None`` for a newer version, :class:`MalformedDocument`
        (naming ``what`` and the field) for a malformed one: fields missing or of the
        wrong type, numbers out of range, no layer, dataset or class."""
        return cls.from_value(parse_json(raw, what), what)

    @classmethod
    def from_value(cls, value: Any, what: str = "the record") -> Record | None:
        """:meth:`parse` of a record's JSON value already parsed (by the bounded parser:
        a step pack's header holds it)."""
        fields = Fields(value, what)
        version = fields.integer("version", 0)
        if version > CONTENT_VERSION:
            return None
        names = {key: fields.texts(key) for key in ("layers", "datasets", "class_names")}
        for key, group in names.items():
            if not group:  # a record must name a layer, a dataset and a class
                raise MalformedDocument(what, f"its {key!r} is empty")
        return cls(
            step=fields.count("step"),
            epoch=fields.count("epoch"),
            **names,
            num_images=cast("dict[str, int]", fields.counts_by_name("num_images")),
            top_k=fields.integer("top_k", minimum=1),  # 0 top images views nothing
            relu=fields.boolean("relu", True),
            set_means=fields.text("set_means", "raw"),
            stage=fields.text("stage", ""),
            dataset_sizes=fields.counts_by_name("dataset_sizes", {}, optional=True),
            arrays=fields.texts("arrays", ()),
            pack=fields.text("pack", ""),
            left_out=tuple(
                _left_out(Fields(item, f"{what}'s left_out row {i}"))
                for i, item in enumerate(fields.list("left_out", []))
            ),
            version=fields.integer("version", CONTENT_VERSION),
        )


def _left_out(row: Fields) -> LeftOut:
    return LeftOut(
        dataset=row.text("dataset"),
        layer=row.optional_text("layer"),
        cause=row.text("cause"),
        images=row.count("images"),
    )


# The OOD detection metrics of one Detection row, in the order the tables show them.
DETECTION_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")


@dataclasses.dataclass(frozen=True)
class Detection:
    """How well one detector tells the InD set from one OOD set at one step.

    ``detector`` scores every image, higher meaning more in-distribution (see
    docs/concepts.md); ``layer`` is the recorded layer whose features it used, or
    None for the detectors on the logits. ``fitted_on``: where a detector on features
    was fitted, ``"reference"`` (the callback's reference set) or ``"ind_half"`` (one
    half of the InD set, the other half scored); ``""`` for the logit detectors and in
    logs written before 0.3 (fitted on the whole InD set). ``fit_images``: the images it
    was fitted on. ``note``: why the metrics are missing (NaN), in words. The metrics
    (:data:`DETECTION_METRICS`) treat InD as the positive class: AUROC, average
    precision with InD positive (``aupr_in``) and with OOD positive (``aupr_out``), and
    the fraction of OOD images accepted at the threshold that accepts 95 % of the InD
    images (``fpr_at_95_tpr``). ``ind_images`` / ``ood_images`` are the images scored (a
    detector may score a documented subsample). A kind ``detection`` blob holds a
    JSON list of rows per OOD set.
    """

    detector: str
    layer: str | None
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float
    ind_images: int
    ood_images: int
    fitted_on: str = ""
    fit_images: int = 0
    note: str = ""

    @staticmethod
    def list_to_json(rows: Sequence[Detection]) -> bytes:
        # NaN (a set without images) is written as null: JSON has no NaN.
        def clean(row: Detection) -> dict:
            data = dataclasses.asdict(row)
            return {k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}

        return json.dumps([clean(row) for row in rows], sort_keys=True).encode("utf-8")

    @classmethod
    def list_from_json(cls, raw: bytes, what: str = "detection rows") -> list[Detection]:
        """Parse a ``detection`` blob; :class:`MalformedDocument` (a ``ValueError``)
        for a malformed one. Metrics may be null or NaN (a set without images)."""
        try:
            return [
                cls._from_fields(Fields(item, f"row {i}"))
                for i, item in enumerate(items(parse_json(raw, "it", allow_nan=True), "it"))
            ]
        except MalformedDocument as error:
            message = f"unreadable {what}: {error}"
            raise MalformedDocument(what, str(error), message) from None

    @classmethod
    def _from_fields(cls, row: Fields) -> Detection:
        return cls(
            detector=row.text("detector"),
            layer=row.optional_text("layer"),
            **{name: row.number(name, float("nan"), allow_nan=True) for name in DETECTION_METRICS},
            ind_images=row.count("ind_images"),
            ood_images=row.count("ood_images"),
            fitted_on=row.text("fitted_on", ""),
            fit_images=row.count("fit_images", 0),
            note=row.text("note", ""),
        )


# The numbers of one Calibration document, in the order the tables show them.
CALIBRATION_METRICS = ("accuracy", "ece", "failure_auroc", "aurc")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How well the classifier's confidence (its maximum softmax probability) serves
    on one dataset at one step (``deephys_lightning.calibration``): ``accuracy`` (of
    the ``images`` with a confidence), ``ece`` (expected calibration error, 15 equal
    bins), ``failure_auroc`` (how well confidence tells right predictions from wrong
    ones; NaN with only one kind) and ``aurc`` (area under the risk-coverage curve;
    lower is better). ``unscored``: images without a confidence (no finite logits).
    A kind ``calibration`` blob holds one as JSON per dataset.

    Example::

        >>> row = Calibration(images=4, unscored=0, accuracy=0.75, ece=0.1,
        ...                   failure_auroc=float("nan"), aurc=0.2)
        >>> Calibration.from_json(row.to_json()).failure_auroc
        nan
    """

    images: int
    unscored: int
    accuracy: float
    ece: float
    failure_auroc: float
    aurc: float

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)  # NaN as null: JSON has no NaN
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}
        return json.dumps(clean, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, what: str = "the calibration") -> Calibration:
        """Parse a ``calibration`` blob; :class:`MalformedDocument` for a malformed one."""
        row = Fields(parse_json(raw, what, allow_nan=True), what)
        return cls(
            images=row.count("images"),
            unscored=row.count("unscored", 0),
            **{
                name: row.number(name, float("nan"), allow_nan=True) for name in CALIBRATION_METRICS
            },
        )


# -- arrays as blob chunks ---------------------------------------------------------


def encode_chunks(array: np.ndarray, chunk_bytes: int = MAX_CHUNK_BYTES) -> list[bytes]:
    """Serialise ``array`` as ``.npy`` bytes (no pickle) cut into chunks of at most
    ``chunk_bytes``: how blob kinds hold arrays.

    Example::

        >>> a = np.arange(6, dtype=np.float16).reshape(2, 3)
        >>> bool((decode_chunks(encode_chunks(a, chunk_bytes=16)) == a).all())
        True
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getbuffer()
    return [bytes(data[i : i + chunk_bytes]) for i in range(0, len(data), chunk_bytes)]


def decode_chunks(chunks: Sequence[bytes]) -> np.ndarray:
    """Join chunks written by :func:`encode_chunks` and load the array (writable,
    safe on several threads at once: :mod:`.npy`)."""
    return npy.loads(bytearray().join(chunks))


# -- assets beside the events --------------------------------------------------------

# Where a run's plugin files live (TensorBoard's place for plugin assets), relative
# to the run directory: thumbnails and the callback's resume state.
ASSET_ROOT = f"plugins/{PLUGIN_NAME}"  # below a run directory (a URL path on object stores)
THUMBNAIL_DIR = "thumbnails"
STATE_FILE = "state.json"
# encoded images with an index (tensorboard_plugin_deephys.log.thumbnail_pack)
PACK_SUFFIX = ".thumbs"
NPY_SUFFIX = ".npy"  # raw uint8 [N, H, W, 3] pixels, as logs of earlier versions hold them
_ASSET_NAME = re.compile(r"thumbnails/[A-Za-z0-9_.~%-]{1,300}\.(npy|thumbs)")


def thumbnails_digest(shape: tuple[int, ...], checksums: np.ndarray) -> str:
    """The content digest of a thumbnail array (part of its file name): a hash of its
    ``shape`` and of the CRC-32C of each image's pixels (``assets.image_checksums``,
    computed once with it; the raw ``.npy`` files of logs before 0.2 keep them beside
    the pixels), so the pixels are hashed once, not twice. It tells whether a
    dataset's thumbnails changed, not who made them."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(tuple(int(n) for n in shape)).encode())
    digest.update(np.ascontiguousarray(checksums, dtype="<u4").data)
    return digest.hexdigest()


# A dataset's part of an asset file name is at most this many bytes (it is ASCII:
# UTF-8 bytes, UTF-16 units and characters alike). With the digest, the suffix and
# the writer's temporary or checksum suffix a file name stays far below the 255
# bytes (Linux, macOS) or UTF-16 units (Windows) a path component may hold, and a
# whole key well within S3's 1,024 bytes.
MAX_NAME_PART = 120
# A longer escaped name keeps a prefix and ends in "." and a hash of the whole name
# (escaped names hold no "."; the hash covers every character, so two different names
# never share a file).
_NAME_HASH_BYTES = 16


def asset_name_part(name: str) -> str:
    """A dataset (or any user) name as a safe, bounded part of a file name.

    The name percent-escaped (UTF-8, every byte but letters, digits and ``_-~``; dots
    too, so that no name holds ".."), as it is when that is at most
    :data:`MAX_NAME_PART` bytes: names of earlier logs keep their files. A longer one
    keeps the escaped characters that fit (never half a character) and ends in ``.``
    and a BLAKE2b of the whole name (32 hex digits), so the part is at most
    :data:`MAX_NAME_PART` bytes and two different names never share it.

    Example::

        >>> asset_name_part("cifar10.1/test")
        'cifar10%2E1%2Ftest'
        >>> part = asset_name_part("x" * 1000)
        >>> len(part), part[:4], part[-33]
        (120, 'xxxx', '.')
    """
    escaped = _escape(name)
    if len(escaped) <= MAX_NAME_PART:
        return escaped
    suffix = "." + hashlib.blake2b(name.encode("utf-8"), digest_size=_NAME_HASH_BYTES).hexdigest()
    budget = MAX_NAME_PART - len(suffix)
    prefix = []
    for char in name:  # whole characters only: an escape is never cut in two
        part = _escape(char)
        if len(part) > budget:
            break
        prefix.append(part)
        budget -= len(part)
    return "".join(prefix) + suffix


def _escape(name: str) -> str:
    return quote(name, safe="").replace(".", "%2E")


def thumbnail_asset_name(dataset: str, digest: str, suffix: str = PACK_SUFFIX) -> str:
    """The asset name (relative to ``ASSET_ROOT``) of a dataset's thumbnails.

    It holds the dataset (:func:`asset_name_part`: percent-escaped, a prefix and a
    hash past :data:`MAX_NAME_PART` bytes) and the content digest, so a changed set
    gets a new file and an unchanged one is never rewritten. Readers take the name
    from the events (the reference's ``file``), never from the dataset, so the
    shortening of long names changes nothing for logs written before. ``suffix``:
    ``PACK_SUFFIX`` (encoded images, written since 0.2) or ``NPY_SUFFIX`` (raw
    pixels, as earlier versions wrote them).
    """
    if suffix not in (PACK_SUFFIX, NPY_SUFFIX):
        raise ValueError(f"thumbnail files end in {PACK_SUFFIX} or {NPY_SUFFIX}, not {suffix!r}")
    return f"{THUMBNAIL_DIR}/{asset_name_part(dataset)}-{digest}{suffix}"


def asset_path(run_dir: str, relative: str) -> str:
    """The file of an asset name read from an event, refusing anything but our own
    plain file names (an event file is data: it must not steer file access)."""
    if not isinstance(relative, str) or not _ASSET_NAME.fullmatch(relative) or ".." in relative:
        raise ValueError(f"not a Deephys asset name: {relative!r}")
    return storage.join(run_dir, *ASSET_ROOT.split("/"), *relative.split("/"))


def state_path(run_dir: str) -> str:
    """The callback's resume state of a run: last step written, thumbnail digests."""
    return storage.join(run_dir, *ASSET_ROOT.split("/"), STATE_FILE)


@dataclasses.dataclass(frozen=True)
class ThumbnailReference:
    """What a ``thumbnails`` blob holds: the asset file of a dataset's images.

    ``file`` is an asset name (see :func:`thumbnail_asset_name`); ``count`` and
    ``shape`` (``[H, W, 3]``) describe its images, uint8 ``[count, H, W, 3]`` once
    read (decoded, for a ``.thumbs`` pack).
    """

    file: str
    count: int
    shape: tuple[int, ...]

    def to_json(self) -> bytes:
        data = {"file": self.file, "count": self.count, "shape": list(self.shape)}
        return json.dumps(data).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, what: str = "the thumbnail reference") -> ThumbnailReference:
        """Parse a reference; :class:`MalformedDocument` (a ``ValueError``) for a
        malformed one, ``ValueError`` for a foreign file name."""
        fields = Fields(parse_json(raw, what), what)
        reference = cls(
            file=fields.text("file"),
            count=fields.integer("count", -1, minimum=-1),
            shape=fields.counts("shape", ()),
        )
        asset_path("", reference.file)  # refuses anything but our own asset names
        return reference
