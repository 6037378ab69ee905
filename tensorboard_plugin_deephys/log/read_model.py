"""The read model: one recorded step of one run, as NumPy arrays and derived numbers.

Every reader goes through :class:`StepData`: the plugin's routes and
``deephys_lightning.read_log``. It answers "the array of this kind for this layer
and dataset", the record's metadata, the per-set scores and the small derived
lists the views show, with the one implementation of each number in
``tensorboard_plugin_deephys.log.derived``; :class:`Neuron` answers for one neuron.
Names are checked first, so a wrong layer, dataset or index is reported as what it
is, with what exists. NumPy, Pillow and TensorBoard's errors (no torch, no
Lightning).

Missing data raise ``tensorboard.errors.NotFoundError`` (a name that was not
recorded: its subclass :class:`UnknownNameError`; an array that does not fit its
record, checked by ``tensorboard_plugin_deephys.log.array_checks`` as it is read:
:class:`DamagedDataError`); an index out of range raises
``tensorboard.errors.InvalidArgumentError`` (the routes answer 404 and 400).

Example::

    reader = DeephysReader(provider, logdir="lightning_logs")
    data = StepData.open(reader, ctx, experiment_id, "version_0")    # latest step
    data.record.datasets                                  # InD first
    data.scores("backbone.fc1", "permuted").summary()     # headline numbers
    neuron = data.neuron("backbone.fc1", 3)               # the index checked once
    neuron.top_images("permuted", k=8).normalized
"""

from __future__ import annotations

import dataclasses
import io
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image
from tensorboard import errors

from tensorboard_plugin_deephys.log import array_checks, derived, metadata
from tensorboard_plugin_deephys.log.assets import ThumbnailFile
from tensorboard_plugin_deephys.log.lru_cache import ByteLRUCache
from tensorboard_plugin_deephys.log.metadata import (
    TOP_NEURONS,
    Calibration,
    Detection,
    Kind,
    LeftOut,
    Record,
)
from tensorboard_plugin_deephys.log.records import DeephysReader, MalformedDataError
from tensorboard_plugin_deephys.log.thumbnail_pack import ThumbnailPack


class UnknownNameError(errors.NotFoundError):
    """A layer or dataset that the step did not record (the message lists those it did)."""


class DamagedDataError(errors.NotFoundError):
    """An array that does not fit its record (shape, dtype or indices out of range)."""


@dataclasses.dataclass(frozen=True)
class TopImages:
    """One neuron's top images in one dataset, highest activation first (``[k]`` each)."""

    indices: np.ndarray  # image index in the recorded dataset
    activations: np.ndarray  # raw activation
    normalized: np.ndarray  # activation / the neuron's InD maximum (NaN: dead on InD)
    labels: np.ndarray
    predictions: np.ndarray


@dataclasses.dataclass(frozen=True)
class TopNeurons:
    """Neurons ranked for an image or a set of images, highest first (``[n]`` each)."""

    neurons: np.ndarray
    # normalized activation (an image) or mean normalized activation (a set of images)
    values: np.ndarray
    normalized: bool = True  # False: the raw means of a log written before (set_means)


@dataclasses.dataclass(frozen=True)
class Pushes:
    """What pushed one image's prediction through the linear head: the top
    contributions (activation x weight, in logit units) to the predicted class's logit
    and to the true class's, and the margin between the two logits."""

    predicted: TopNeurons
    label: TopNeurons
    margin: float  # NaN without a prediction


@dataclasses.dataclass(frozen=True)
class TopCategories:
    """The classes with the highest mean activation of one neuron on one dataset,
    highest first (``[n]`` each)."""

    labels: np.ndarray
    means: np.ndarray  # raw mean activation over the images of the class
    normalized: np.ndarray  # means / the neuron's InD maximum (NaN: dead on InD)


@dataclasses.dataclass(frozen=True)
class ActivationHistogram:
    """One neuron's activations on one dataset, counted in bins over the range every
    dataset of the record shares for it (finite activations only)."""

    edges: np.ndarray  # float64 [B + 1]; bin i: edges[i] <= x < edges[i + 1], the last closed
    counts: np.ndarray  # int32 [B]


@dataclasses.dataclass(frozen=True)
class Interval:
    """One activation band of a neuron on one dataset, ``low < activation <= high``,
    and up to a few of its images, highest activation first."""

    low: float
    high: float
    images: TopImages


@dataclasses.dataclass(frozen=True)
class TopPredictions:
    """One image's most probable classes and their probabilities."""

    classes: np.ndarray
    probabilities: np.ndarray


@dataclasses.dataclass(frozen=True)
class KeptActivation:
    """The InD set's top neurons of one category and what another set keeps of their
    activation on that category (``[n]`` each, in the InD set's order).

    ``kept = set_means / ind_means`` (NaN where the InD mean is not positive or the set
    has no image of the category); ``lost`` marks the :data:`LOST_MARKED` neurons with
    the lowest kept share among those that keep less than all of it (``kept < 1``),
    ties to the higher InD rank; none on the InD set itself.
    """

    neurons: np.ndarray
    ind_means: np.ndarray  # mean normalized activation on the InD images of the category
    set_means: np.ndarray  # the same on this set's images of the category
    kept: np.ndarray
    lost: np.ndarray  # bool


# How many of a category's InD top neurons the category-across-sets answer marks, per
# OOD set, as losing most of their activation there (KeptActivation.lost).
LOST_MARKED = 3


@dataclasses.dataclass(frozen=True)
class Mistakes:
    """A category's misclassified images (indices, most confident first) and every
    image's confidence (None where the log lacks it)."""

    false_positives: np.ndarray
    false_negatives: np.ndarray
    confidence: np.ndarray | None


class StepData:
    """The Deephys data of ``run`` at the recorded step of ``record``.

    Arrays are read lazily through ``reader`` (whose bounded cache they share) and
    never copied; treat them as read-only. An instance also remembers the arrays it
    has read, so make one per request (they are cheap), not one to keep. Use
    :meth:`open` to pick a step.
    """

    def __init__(
        self, reader: DeephysReader, ctx, experiment_id: str, run: str, record: Record
    ) -> None:
        self._reader = reader
        self._ctx = ctx
        self._experiment_id = experiment_id
        self.run = run
        self.record = record
        self._arrays: dict[tuple[Kind, str | None, str | None], np.ndarray] = {}

    @classmethod
    def open(
        cls, reader: DeephysReader, ctx, experiment_id: str, run: str, step: int | None = None
    ) -> StepData:
        """The data of ``run`` at ``step`` (None: the latest recorded step)."""
        return cls(reader, ctx, experiment_id, run, reader.record(ctx, experiment_id, run, step))

    @classmethod
    def every_step(cls, reader: DeephysReader, ctx, experiment_id: str, run: str) -> list[StepData]:
        """The data of every recorded step of ``run``, oldest first."""
        records = reader.records(ctx, experiment_id, run)
        return [cls(reader, ctx, experiment_id, run, record) for record in records]

    @property
    def step(self) -> int:
        return self.record.step

    def role(self, dataset: str) -> str:
        """``"ind"`` for the in-distribution set, ``"ood"`` for the others."""
        return "ind" if dataset == self.record.ind else "ood"

    def left_out(self, dataset: str, layer: str | None) -> list[LeftOut]:
        """The record's counts of ``dataset``'s images left out for values that are not
        finite: on ``layer``, and from its predictions (rows without a layer)."""
        return [
            row
            for row in self.record.left_out
            if row.dataset == dataset and row.layer in (None, layer)
        ]

    # -- name and range checks ------------------------------------------------------

    def check_layer(self, layer: str) -> None:
        if layer not in self.record.layers:
            raise UnknownNameError(
                f"layer {layer!r} was not recorded at step {self.step}; "
                f"layers: {list(self.record.layers)}"
            )

    def check_dataset(self, dataset: str) -> None:
        if dataset not in self.record.datasets:
            raise UnknownNameError(
                f"dataset {dataset!r} was not recorded at step {self.step}; "
                f"datasets: {list(self.record.datasets)}"
            )

    def check_ood(self, dataset: str) -> None:
        """Scores exist for OOD sets only."""
        self.check_dataset(dataset)
        if dataset == self.record.ind:
            raise UnknownNameError(
                f"{dataset!r} is the in-distribution set; scores exist for the OOD sets "
                f"{list(self.record.ood)}"
            )

    # Every index a route takes (neuron, image, class, page) is checked here, below 0
    # and past the end alike, in one wording: what it got, how many there are, and the
    # valid range, e.g. "neuron -1 is out of range: layer 'fc1' has 50 neurons (0–49)".

    def check_neuron(self, layer: str, neuron: int, count: int | None = None) -> None:
        """``neuron`` must be one of the ``count`` (default: recorded) neurons of ``layer``."""
        count = self.num_neurons(layer) if count is None else count
        if not 0 <= neuron < count:
            raise errors.InvalidArgumentError(
                f"neuron {neuron} is out of range: layer {layer!r} has "
                f"{_counted(count, 'neuron')} ({_span(count)})"
            )

    def neuron(self, layer: str, neuron: int) -> Neuron:
        """Neuron ``neuron`` of ``layer``, checked here once (:meth:`check_layer`,
        :meth:`check_neuron`): what it answers reads its rows of this step's arrays
        without checking the index again."""
        self.check_layer(layer)
        self.check_neuron(layer, neuron)
        return Neuron(self, layer, neuron)

    def check_image(self, dataset: str, index: int, count: int | None = None) -> None:
        """``index`` must be one of the ``count`` (default: recorded) images of ``dataset``."""
        count = len(self.labels(dataset)) if count is None else count
        if not 0 <= index < count:
            raise errors.InvalidArgumentError(
                f"image index {index} is out of range: {dataset!r} has "
                f"{_counted(count, 'image')} ({_span(count)})"
            )

    def check_class(self, name: str, value: int) -> None:
        """``value`` (the parameter ``name``: a label or a prediction) must be a class."""
        count = len(self.record.class_names)
        if not 0 <= value < count:
            raise errors.InvalidArgumentError(
                f"{name} {value} is out of range: there {'is' if count == 1 else 'are'} "
                f"{_counted(count, 'class', 'classes')} ({_span(count)})"
            )

    @staticmethod
    def check_page(page: int, page_size: int, count: int, noun: str = "image") -> None:
        """``page`` must be one of the pages of ``page_size`` that ``count`` items (images,
        or the ``noun`` said) fill; a set without any has one page, 0, that is empty."""
        pages = -(-count // page_size)
        if not 0 <= page < max(pages, 1):
            if not pages:
                raise errors.InvalidArgumentError(
                    f"page {page} is out of range: the set has no {noun}s (page 0 only, empty)"
                )
            raise errors.InvalidArgumentError(
                f"page {page} is out of range: {_counted(pages, 'page')} of "
                f"{_counted(page_size, noun)} ({_span(pages)})"
            )

    # -- stored arrays --------------------------------------------------------------

    def array(self, kind: Kind, layer: str | None = None, dataset: str | None = None) -> np.ndarray:
        """The stored array of ``kind`` (for ``layer`` and ``dataset`` as it needs); the
        JSON kinds are documents, not arrays (``DeephysReader.document``)."""
        key = (kind, layer, dataset)
        if key not in self._arrays:
            self._arrays[key] = self._read(kind, layer, dataset)
        return self._arrays[key]

    def _read(self, kind: Kind, layer: str | None, dataset: str | None) -> np.ndarray:
        """:meth:`array` without keeping it in this instance (the reader's cache may)."""
        if layer is not None:
            self.check_layer(layer)
        if dataset is not None:
            self.check_dataset(dataset)
        array = self._reader.array(
            self._ctx,
            self._experiment_id,
            self.run,
            kind,
            step=self.step,
            layer=layer,
            dataset=dataset,
        )
        self._check(kind, layer, dataset, array)
        return array

    def _check(self, kind: Kind, layer: str | None, dataset: str | None, array) -> None:
        """Refuse an array that does not fit its record
        (``tensorboard_plugin_deephys.log.array_checks``):
        a damaged or foreign log makes that dataset unavailable, never a wrong view."""
        sizes = {"C": len(self.record.class_names)}
        if dataset is not None and dataset in self.record.num_images:
            sizes["N"] = self.record.num_images[dataset]
        if layer is not None and not (kind is Kind.TOP_INDICES and dataset == self.record.ind):
            sizes["M"] = self.num_neurons(layer)

        def verdict() -> str | None:
            found = array_checks.problem(kind, array, sizes)
            if found is None and kind in array_checks.PAIRED_WITH:
                partner = self.array(array_checks.PAIRED_WITH[kind][0], layer, dataset)
                found = array_checks.pairing_problem(kind, array, partner)
            return found

        key = ("check", self._experiment_id, self.run, self.step, kind, layer, dataset)
        found = self._reader.remember(key, verdict)  # once per array, not per request
        if found is not None:
            names = (("layer", layer), ("dataset", dataset))
            where = " ".join(f"{what} {name!r}" for what, name in names if name)
            raise DamagedDataError(
                f"the {kind.value} of {where} at step {self.step} of run {self.run!r} are "
                f"damaged: {found} (its event file or step pack was damaged, or not written "
                "by Deephys)"
            )

    def optional_array(
        self, kind: Kind, layer: str | None = None, dataset: str | None = None
    ) -> np.ndarray | None:
        """:meth:`array`, or None where this step lacks the kind (a log written before
        it existed, or one that did not record it); a wrong name still raises."""
        try:
            return self.array(kind, layer, dataset)
        except UnknownNameError:
            raise
        except errors.NotFoundError:
            return None

    def labels(self, dataset: str) -> np.ndarray:
        """int32 ``[N]`` ground-truth class of each image."""
        return self.array(Kind.LABELS, dataset=dataset)

    def predictions(self, dataset: str) -> np.ndarray:
        """int32 ``[N]`` predicted class of each image."""
        return self.array(Kind.PREDICTIONS, dataset=dataset)

    def positions(self, dataset: str) -> np.ndarray:
        """int32 ``[N]`` index in its dataset of each recorded image."""
        return self.array(Kind.POSITIONS, dataset=dataset)

    def logits(self, dataset: str) -> np.ndarray:
        """float32 ``[N, C]`` classifier outputs (written with the full matrix, or always
        with ``record_logits=True``)."""
        return self.array(Kind.LOGITS, dataset=dataset)

    def activations(self, layer: str, dataset: str) -> np.ndarray:
        """float16 ``[N, M]`` (written while at most ``max_activation_bytes``)."""
        return self.array(Kind.ACTIVATIONS, layer, dataset)

    def category_means(self, layer: str, dataset: str) -> np.ndarray:
        """float32 ``[C, M]`` mean activation per category (NaN rows: no images)."""
        return self.array(Kind.CATEGORY_MEANS, layer, dataset)

    def top_image_arrays(self, layer: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Per neuron, the top image indices ``[M, k]`` and their activations ``[M, k]``."""
        return self.array(Kind.TOP_INDICES, layer, dataset), self.array(
            Kind.TOP_VALUES, layer, dataset
        )

    def image_top_neuron_arrays(self, layer: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Per image, its top neurons ``[N, n]`` and their normalized activations ``[N, n]``."""
        return self.array(Kind.IMAGE_TOP_NEURONS, layer, dataset), self.array(
            Kind.IMAGE_TOP_VALUES, layer, dataset
        )

    def maxima(self, layer: str, dataset: str) -> np.ndarray:
        """float32 ``[M]``: each neuron's highest activation on ``dataset``.

        Steps written before the ``maxima`` kind existed (an old log, or the old steps
        of a run resumed by a newer callback) give the first top value: the same
        number for every finite activation.
        """
        maxima = self.optional_array(Kind.MAXIMA, layer, dataset)
        if maxima is not None:
            return maxima
        values = self.array(Kind.TOP_VALUES, layer, dataset)
        if values.shape[1] == 0:
            return np.full(values.shape[0], np.nan, dtype=np.float32)
        return values[:, 0]

    def ind_max(self, layer: str) -> np.ndarray:
        """float32 ``[M]``: the InD maxima that normalize every dataset's activations."""
        return self.maxima(layer, self.record.ind)

    def num_neurons(self, layer: str) -> int:
        """The layer's width: the rows of its InD top indices (in a step pack, from the
        pack's header, without reading them)."""
        self.check_layer(layer)
        shape = self._reader.array_shape(
            self._ctx,
            self._experiment_id,
            self.run,
            Kind.TOP_INDICES,
            step=self.step,
            layer=layer,
            dataset=self.record.ind,
        )
        if shape is None:  # the events layout: the array itself
            shape = self.array(Kind.TOP_INDICES, layer, self.record.ind).shape
        return int(shape[0])

    def thumbnails(self, dataset: str) -> ThumbnailPack | ThumbnailFile:
        """The uint8 ``[N, H, W, 3]`` images of ``dataset`` as of this step, read one at a
        time (``DeephysReader.thumbnails``); :meth:`thumbnail_encoded` and
        :meth:`thumbnail_array` read them with the errors said in words."""
        self.check_dataset(dataset)
        images = self._reader.thumbnails(
            self._ctx, self._experiment_id, self.run, dataset, self.step
        )
        count = self.record.num_images.get(dataset)
        found = _read_thumbnails(dataset, len, images)  # the file as it is now
        if count is not None and found != count:  # another step's, or a damaged file's
            raise DamagedDataError(
                f"the thumbnails of {dataset!r} found for step {self.step} hold {found} "
                f"images where the record has {count}: they belong to another recording "
                "(a lost thumbnail reference, or a set recorded without thumbnails)"
            )
        return images

    def thumbnail_encoded(self, dataset: str, index: int) -> tuple[bytes, str]:
        """Image ``index`` of ``dataset`` as an image file and its media type: the bytes
        stored (PNG or JPEG), or for the raw pixels of earlier logs, a PNG made now."""
        images = self.thumbnails(dataset)
        self.check_image(dataset, index)
        if isinstance(images, ThumbnailPack):
            return _read_thumbnails(dataset, lambda pack: pack.encoded(index), images), (
                images.media_type
            )
        pixels = _read_thumbnails(dataset, lambda file: file[index], images)
        out = io.BytesIO()
        Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB").save(out, format="PNG")
        return out.getvalue(), "image/png"

    def thumbnail_array(self, dataset: str) -> np.ndarray:
        """uint8 ``[N, H, W, 3]``: every image of ``dataset``, read now, in memory."""
        return _read_thumbnails(dataset, np.array, self.thumbnails(dataset))

    # -- derived numbers ------------------------------------------------------------

    def scores(self, layer: str, ood: str) -> derived.OODScores:
        """Per-neuron novelty (normalized and raw), spurious score and activation ratio
        of an OOD set; the normalized novelty comes from the stored raw one and the InD
        maxima, so logs written before it existed give it too."""
        self.check_ood(ood)
        arrays = {
            field: self.array(kind, layer, ood) for kind, field in metadata.SCORE_KINDS.items()
        }
        return derived.OODScores(**arrays, ind_max=self.ind_max(layer))

    def detection(self, ood: str) -> list[Detection]:
        """The OOD detection rows of ``ood`` (empty when none were recorded: detectors
        off, or a log written before them)."""
        self.check_ood(ood)
        try:
            raw = self._reader.document(
                self._ctx,
                self._experiment_id,
                self.run,
                Kind.DETECTION,
                step=self.step,
                dataset=ood,
            )
        except errors.NotFoundError:  # the names are checked: the step lacks the rows
            return []
        try:
            return Detection.list_from_json(raw, f"detection rows of {ood!r}")
        except ValueError as error:  # json_documents.MalformedDocument
            raise MalformedDataError(f"run {self.run!r}, step {self.step}: {error}") from None

    def calibration(self, dataset: str) -> Calibration | None:
        """How well the classifier's confidence serves on ``dataset`` (ECE, failure
        detection); None where the step lacks it (no logit detectors, or a log written
        before)."""
        self.check_dataset(dataset)
        try:
            raw = self._reader.document(
                self._ctx,
                self._experiment_id,
                self.run,
                Kind.CALIBRATION,
                step=self.step,
                dataset=dataset,
            )
        except errors.NotFoundError:  # the name is checked: the step lacks it
            return None
        try:
            return Calibration.from_json(raw, f"calibration of {dataset!r}")
        except ValueError as error:  # json_documents.MalformedDocument
            raise MalformedDataError(f"run {self.run!r}, step {self.step}: {error}") from None

    def accuracy(self, dataset: str) -> float:
        return derived.accuracy(self.labels(dataset), self.predictions(dataset))

    def confusion_matrix(self, dataset: str) -> np.ndarray:
        """int64 ``[C, C]`` counts of (true, predicted) class: ``C * C`` cells, for a few
        classes only (:meth:`confusion_cells` for any number)."""
        return self._class_pairs(dataset, derived.confusion_matrix)

    def confusion_cells(self, dataset: str) -> np.ndarray:
        """int64 ``[K, 3]``: the cells of the confusion matrix that hold images,
        ``(true, predicted, count)``, most images first, ties to the lower true class,
        then the lower predicted one (``derived.confusion_cells``: ``K <= N``, whatever
        the number of classes)."""
        return self._class_pairs(dataset, derived.confusion_cells)

    def _class_pairs(
        self, dataset: str, count: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    ) -> np.ndarray:
        """``count(labels, predictions, C)`` of ``dataset``; labels or predictions
        outside the classes are a ``NotFoundError`` that says so."""
        try:
            return count(
                self.labels(dataset), self.predictions(dataset), len(self.record.class_names)
            )
        except ValueError as error:  # only a damaged or foreign log gets here
            raise errors.NotFoundError(
                f"the labels or predictions of {dataset!r} at step {self.step} are unreadable: "
                f"{error}"
            ) from None

    # Per-neuron answers, each for one call: a request that reads several of one neuron
    # takes :meth:`neuron` once and asks it.

    def top_images(self, layer: str, dataset: str, neuron: int, k: int | None = None) -> TopImages:
        """The ``k`` (default: all recorded) top images of ``neuron`` in ``dataset``."""
        return self.neuron(layer, neuron).top_images(dataset, k)

    def bottom_images(
        self, layer: str, dataset: str, neuron: int, k: int | None = None
    ) -> TopImages | None:
        """:meth:`Neuron.bottom_images` of ``neuron``."""
        return self.neuron(layer, neuron).bottom_images(dataset, k)

    def fire_fraction(self, layer: str, dataset: str) -> np.ndarray | None:
        """float32 ``[M]``: the fraction of the images of ``dataset`` on which each neuron
        is above 0 (NaN: the set has no images), or None where this step lacks it."""
        return self.optional_array(Kind.FIRE_FRACTION, layer, dataset)

    def activation_histogram(
        self, layer: str, dataset: str, neuron: int
    ) -> ActivationHistogram | None:
        """:meth:`Neuron.activation_histogram` of ``neuron``."""
        return self.neuron(layer, neuron).activation_histogram(dataset)

    def intervals(self, layer: str, dataset: str, neuron: int) -> list[Interval] | None:
        """:meth:`Neuron.intervals` of ``neuron``."""
        return self.neuron(layer, neuron).intervals(dataset)

    def top_maps(self, layer: str, dataset: str) -> np.ndarray | None:
        """float16 ``[M, k, h, w]``: where each neuron fires on each of its top images
        (``top_maps[j, i]`` belongs to image ``top_indices[j, i]``), or None where this
        step has no maps for the layer (a flat layer, ``spatial_maps=False``, a log
        written before them)."""
        return self.optional_array(Kind.TOP_MAPS, layer, dataset)

    def top_categories(
        self, layer: str, dataset: str, neuron: int, n: int = 5
    ) -> TopCategories | None:
        """:meth:`Neuron.top_categories` of ``neuron``."""
        return self.neuron(layer, neuron).top_categories(dataset, n)

    def image_top_neurons(self, layer: str, dataset: str, index: int, n: int) -> TopNeurons:
        """Image ``index``'s ``n`` top neurons by normalized activation."""
        self.check_image(dataset, index)
        neurons, normalized = self.image_top_neuron_arrays(layer, dataset)
        # An image left out of the layer (activations not finite) has none (-1).
        found = neurons[index] >= 0
        return TopNeurons(neurons=neurons[index][found][:n], values=normalized[index][found][:n])

    def category_top_neurons(self, layer: str, dataset: str, label: int) -> TopNeurons:
        """The neurons most active on average over the images of category ``label``, by
        mean normalized activation (dead neurons last)."""
        self.check_class("label", label)
        ranked = self.ranked_category_means(layer, dataset, "neurons", TOP_NEURONS)
        return TopNeurons(neurons=ranked.order[label], values=ranked.values[label])

    def ranked_category_means(
        self, layer: str, dataset: str, per: str, n: int
    ) -> derived.RankedRows:
        """The category means ranked for every category at once (``per="neurons"``:
        each category's ``n`` top neurons by mean normalized activation, ``[C, n]``) or
        for every neuron (``per="categories"``: each neuron's ``n`` top categories by
        raw mean, ``[M, n]``, non-finite means last, as NaN).

        Computed once per step, layer and dataset and kept in a cache of its own
        (:func:`_ranked_cache`), so that a neuron or category request reads a row of
        this small table, not the ``[C, M]`` means: 179 MB for 21,841 classes x 2,048
        neurons, of which four sets do not fit the reader's cache together.
        """
        if per not in ("neurons", "categories"):
            raise ValueError(f"per must be 'neurons' or 'categories', got {per!r}")

        def rank() -> derived.RankedRows:
            # not kept in this instance: a neuron request ranks every set's means
            means = self._read(Kind.CATEGORY_MEANS, layer, dataset)
            if per == "neurons":
                ind_max = self.ind_max(layer)
                return derived.rank_rows(means, n, lambda rows: derived.normalize(rows, ind_max))
            return derived.rank_rows(
                means.T, n, lambda rows: np.where(np.isfinite(rows), rows, np.float32("nan"))
            )

        key = (self._experiment_id, self.run, self.step, self.record.pack)
        return _ranked_cache(self._reader).get_or_compute((*key, layer, dataset, per, n), rank)

    def category_accuracy(self, dataset: str, label: int) -> float:
        """Recall of category ``label`` on ``dataset``: its images predicted ``label``
        among those with a prediction (``derived.accuracy``); NaN for none."""
        self.check_class("label", label)
        labels = self.labels(dataset)
        members = labels == label
        return derived.accuracy(labels[members], self.predictions(dataset)[members])

    def kept_activation(self, layer: str, dataset: str, label: int, n: int) -> KeptActivation:
        """The InD set's ``n`` top neurons of category ``label``
        (:meth:`category_top_neurons` of the InD set) and their mean normalized
        activation over ``dataset``'s images of the category: how much of it they keep.

        Like :meth:`ranked_category_means`, every category's row is computed at once per
        step, layer and set and kept in the ranked cache, so a request reads a row
        (not the ``[C, M]`` means of every set).
        """
        self.check_class("label", label)

        def pick() -> derived.RankedRows:
            ind = self.ranked_category_means(layer, self.record.ind, "neurons", TOP_NEURONS)
            if dataset == self.record.ind:  # its own ranking
                return ind
            means = self._read(Kind.CATEGORY_MEANS, layer, dataset)
            picked = np.take_along_axis(means, ind.order, axis=1)
            values = derived.normalize(picked, self.ind_max(layer)[ind.order])
            return derived.RankedRows(order=ind.order, values=values)

        key = (self._experiment_id, self.run, self.step, self.record.pack, layer, dataset)
        row = _ranked_cache(self._reader).get_or_compute((*key, "ind_neurons", TOP_NEURONS), pick)
        ind = self.category_top_neurons(layer, self.record.ind, label)
        ind_means, set_means = ind.values[:n], row.values[label][:n]
        with np.errstate(divide="ignore", invalid="ignore"):
            kept = np.where(ind_means > 0, set_means / ind_means, np.nan).astype(np.float32)
        lost = np.zeros(len(kept), dtype=bool)
        if dataset != self.record.ind:
            losing = np.flatnonzero(np.isfinite(kept) & (kept < 1))
            lost[losing[np.argsort(kept[losing], kind="stable")[:LOST_MARKED]]] = True
        return KeptActivation(ind.neurons[:n], ind_means, set_means, kept, lost)

    def pair_top_neurons(
        self, layer: str, dataset: str, label: int, pred: int, either: bool = False
    ) -> TopNeurons:
        """The neurons most active on average over a confusion set: the images of
        ``label`` predicted as ``pred``, or with ``either`` the paper's confusion
        between the two classes (also ``pred`` predicted as ``label``)."""
        self.check_class("label", label)
        self.check_class("pred", pred)
        if either:
            if label == pred:
                raise errors.InvalidArgumentError(
                    "a confusion set in either direction needs two different classes"
                )
            kinds = (Kind.CONFUSIONS, Kind.CONFUSION_TOP_NEURONS, Kind.CONFUSION_TOP_MEANS)
            key = (min(label, pred), max(label, pred))
            pairs = self.optional_array(kinds[0], layer, dataset)
            if pairs is None:
                raise errors.NotFoundError(
                    f"step {self.step} was written before confusion sets in either direction "
                    "were recorded; open the directed set (label predicted as pred), or "
                    "record again"
                )
        else:
            kinds = (Kind.PAIRS, Kind.PAIR_TOP_NEURONS, Kind.PAIR_TOP_MEANS)
            key = (label, pred)
            pairs = self.array(kinds[0], layer, dataset)
        row = np.flatnonzero((pairs[:, 0] == key[0]) & (pairs[:, 1] == key[1]))
        if not len(row):
            what = "or the other way round" if either else ""
            raise errors.NotFoundError(
                f"no image of {dataset!r} has label {label} and prediction {pred} {what}".strip()
            )
        return TopNeurons(
            neurons=self.array(kinds[1], layer, dataset)[row[0]],
            values=self.array(kinds[2], layer, dataset)[row[0]],
            normalized=either or self.record.set_means == "normalized",
        )

    def has_head(self, layer: str) -> bool:
        """Whether ``layer`` feeds a linear head the callback checked at this step (and
        so has the contributions of ``deephys_lightning.contributions``)."""
        return self.optional_array(Kind.HEAD_WEIGHT, layer, self.record.ind) is not None

    def image_pushes(self, layer: str, dataset: str, index: int, n: int) -> Pushes | None:
        """What pushed image ``index``'s prediction through the linear head: its ``n``
        top contributions to the predicted and to the true class's logits, and its
        margin; None where the layer feeds no head."""
        self.check_image(dataset, index)
        if not self.has_head(layer):
            return None
        arrays = [
            self.array(kind, layer, dataset)[index]
            for kind in (
                Kind.PREDICTED_PUSH_NEURONS,
                Kind.PREDICTED_PUSH_VALUES,
                Kind.LABEL_PUSH_NEURONS,
                Kind.LABEL_PUSH_VALUES,
            )
        ]
        predicted, label = arrays[0] >= 0, arrays[2] >= 0  # none without a prediction
        return Pushes(
            predicted=TopNeurons(arrays[0][predicted][:n], arrays[1][predicted][:n], False),
            label=TopNeurons(arrays[2][label][:n], arrays[3][label][:n], False),
            margin=float(self.array(Kind.MARGINS, layer, dataset)[index]),
        )

    def pair_pushes(self, layer: str, dataset: str, label: int, pred: int) -> TopNeurons | None:
        """The neurons with the largest mean contribution to the margin of ``pred`` over
        ``label`` on the images of ``label`` predicted as ``pred``; None where the layer
        feeds no head or no image is so."""
        if not self.has_head(layer):
            return None
        pairs = self.array(Kind.PAIRS, layer, dataset)
        row = np.flatnonzero((pairs[:, 0] == label) & (pairs[:, 1] == pred))
        if not len(row):
            return None
        neurons = self.array(Kind.PAIR_PUSH_NEURONS, layer, dataset)[row[0]]
        values = self.array(Kind.PAIR_PUSH_VALUES, layer, dataset)[row[0]]
        return TopNeurons(neurons[neurons >= 0], values[neurons >= 0], False)

    def zeroing(self, layer: str, dataset: str, neuron: int) -> dict[str, float] | None:
        """What zeroing ``neuron`` alone does to ``dataset``'s predictions through the
        head: ``changed``, ``accuracy``, ``base_accuracy``, ``images``; None without."""
        if not self.has_head(layer):
            return None
        base = self.array(Kind.ZEROING_BASE, layer, dataset)
        return {
            "changed": int(self.array(Kind.ZEROED_CHANGES, layer, dataset)[neuron]),
            "accuracy": float(self.array(Kind.ZEROED_ACCURACY, layer, dataset)[neuron]),
            "base_accuracy": float(base[0]),
            "images": int(base[1]),
        }

    def has_either_confusions(self, layer: str, dataset: str) -> bool:
        """Whether this step holds the confusion sets in either direction (logs written
        before them do not)."""
        return self.optional_array(Kind.CONFUSIONS, layer, dataset) is not None

    def members(
        self, dataset: str, label: int, pred: int | None = None, either: bool = False
    ) -> np.ndarray:
        """Indices of the images of category ``label`` (predicted as ``pred``, if given;
        with ``either``, also those of ``pred`` predicted as ``label``)."""
        labels, predictions = self.labels(dataset), self.predictions(dataset)
        if pred is None:
            return np.flatnonzero(labels == label)
        selected = (labels == label) & (predictions == pred)
        if either:
            selected |= (labels == pred) & (predictions == label)
        return np.flatnonzero(selected)

    def confidences(self, dataset: str) -> np.ndarray | None:
        """The probability the model gave its prediction, per image (the top
        probability written with the top predictions), or None where the log lacks
        it (written before they were recorded)."""
        top = self.optional_array(Kind.TOP_PROBABILITIES, dataset=dataset)
        return None if top is None or top.shape[-1] == 0 else np.asarray(top[:, 0], np.float32)

    def top_predictions(self, dataset: str, index: int) -> TopPredictions | None:
        """Image ``index``'s most probable classes, most probable first, or None where
        the log lacks them."""
        self.check_image(dataset, index)
        classes = self.optional_array(Kind.TOP_CLASSES, dataset=dataset)
        probabilities = self.optional_array(Kind.TOP_PROBABILITIES, dataset=dataset)
        if classes is None or probabilities is None:
            return None
        found = classes[index] != derived.NO_PREDICTION  # none without finite logits
        return TopPredictions(classes[index][found], probabilities[index][found])

    def mistakes(self, dataset: str, label: int) -> Mistakes:
        """Category ``label``'s false positives (predicted ``label``, labelled
        otherwise) and false negatives (labelled ``label``, predicted otherwise), each
        most confident prediction first (ties and logs without confidences: in
        dataset order)."""
        labels, predictions = self.labels(dataset), self.predictions(dataset)
        confidence = self.confidences(dataset)

        def ordered(selected: np.ndarray) -> np.ndarray:
            members = np.flatnonzero(selected)
            if confidence is None:
                return members
            return members[np.argsort(-confidence[members], kind="stable")]

        return Mistakes(
            false_positives=ordered((predictions == label) & (labels != label)),
            false_negatives=ordered(
                (labels == label) & (predictions != label) & (predictions != derived.NO_PREDICTION)
            ),
            confidence=confidence,
        )


class Neuron:
    """One neuron of one layer at one step, its index checked once, by
    :meth:`StepData.neuron` (make it there, not directly).

    Its answers index the step's per-neuron arrays (``[M, ...]`` rows, the category
    means' ``[C, M]`` columns) with ``index`` unchecked, and so may a caller: each of
    those arrays was checked, as it was read, to have an entry for each of the layer's
    neurons (``tensorboard_plugin_deephys.log.array_checks``). A neuron answer reads a
    dozen of them for every dataset; the index is checked once, not for each.
    """

    def __init__(self, data: StepData, layer: str, index: int) -> None:
        self.data = data
        self.layer = layer
        self.index = index

    def top_images(self, dataset: str, k: int | None = None) -> TopImages:
        """Its ``k`` (default: all recorded) top images in ``dataset``."""
        indices, values = self.data.top_image_arrays(self.layer, dataset)
        return self._images(dataset, indices[self.index, :k], values[self.index, :k])

    def top_maps(self, dataset: str, k: int | None = None) -> np.ndarray | None:
        """float16 ``[k', h, w]``: where it fires on its first ``k`` top images in
        ``dataset`` (maps are kept for its first ``MAPPED_IMAGES`` only), or None where
        the step has no maps for them (:meth:`StepData.top_maps`)."""
        maps = self.data.top_maps(self.layer, dataset)
        return None if maps is None else maps[self.index, :k]

    def bottom_images(self, dataset: str, k: int | None = None) -> TopImages | None:
        """The ``k`` (default: all recorded) images of ``dataset`` on which it is least
        active, lowest first, ties to the lower index; None where the step lacks them
        (a log written before they were recorded)."""
        indices = self.data.optional_array(Kind.BOTTOM_INDICES, self.layer, dataset)
        values = self.data.optional_array(Kind.BOTTOM_VALUES, self.layer, dataset)
        if indices is None or values is None:
            return None
        return self._images(dataset, indices[self.index, :k], values[self.index, :k])

    def activation_histogram(self, dataset: str) -> ActivationHistogram | None:
        """Its histogram on ``dataset``, over the range of the layer's stored
        ``histogram_range`` (one per neuron for every dataset: the InD set's), or None
        where the step lacks them."""
        data = self.data
        counts = data.optional_array(Kind.ACTIVATION_COUNTS, self.layer, dataset)
        value_range = data.optional_array(Kind.HISTOGRAM_RANGE, self.layer, data.record.ind)
        if counts is None or value_range is None:
            return None
        edges = derived.histogram_edges(value_range[self.index], counts.shape[1])
        return ActivationHistogram(edges=edges, counts=counts[self.index])

    def intervals(self, dataset: str) -> list[Interval] | None:
        """Its activation bands on ``dataset``, highest first: equal widths over
        ``(0, max]`` (``derived.interval_edges`` of the stored ``maxima``), each with its
        stored examples. ``[]`` where the maximum is not a positive finite number (no
        bands); None where the step lacks the examples."""
        indices = self.data.optional_array(Kind.INTERVAL_INDICES, self.layer, dataset)
        values = self.data.optional_array(Kind.INTERVAL_VALUES, self.layer, dataset)
        if indices is None or values is None:
            return None
        bands = indices.shape[1]
        edges = derived.interval_edges(self.data.maxima(self.layer, dataset)[self.index], bands)
        if not np.isfinite(edges).all():
            return []
        found = []
        for band in range(bands):  # highest first
            row, band_values = indices[self.index, band], values[self.index, band]
            shown = row >= 0
            images = self._images(dataset, row[shown], band_values[shown])
            low, high = edges[bands - 1 - band], edges[bands - band]
            found.append(Interval(low=float(low), high=float(high), images=images))
        return found

    def top_categories(self, dataset: str, n: int = 5) -> TopCategories | None:
        """The ``n`` classes on which it is most active on average in ``dataset`` (from
        the stored category means; classes without images, NaN there, are left out),
        highest first, ties to the lower label. None where the step lacks the category
        means."""
        try:  # the ranked table, not the [C, M] means, once it is made
            ranked = self.data.ranked_category_means(self.layer, dataset, "categories", n)
        except UnknownNameError:
            raise
        except errors.NotFoundError:  # a log written before them, or a damaged array
            return None
        finite = np.isfinite(ranked.values[self.index])
        labels, means = ranked.order[self.index][finite], ranked.values[self.index][finite]
        return TopCategories(
            labels=labels,
            means=means,
            normalized=derived.normalize(means, self._ind_max()),
        )

    def _ind_max(self) -> np.ndarray:
        """Its InD maximum, as stored (:meth:`StepData.ind_max`)."""
        return self.data.ind_max(self.layer)[self.index]

    def _images(self, dataset: str, indices: np.ndarray, values: np.ndarray) -> TopImages:
        """Images ``indices`` of ``dataset`` with ``values``, their activations of it."""
        return TopImages(
            indices=indices,
            activations=values,
            normalized=derived.normalize(values, self._ind_max()),
            labels=self.data.labels(dataset)[indices],
            predictions=self.data.predictions(dataset)[indices],
        )


# The ranked category means (StepData.ranked_category_means: a few MB at most per step,
# layer and set) have a cache of their own per reader. In the reader's cache the
# [C, M] means they are ranked from, read after them, would evict them first (four
# sets of 21,841 x 2,048 means do not fit its 512 MB), and every request would rank
# them again.
RANKED_CACHE_BYTES = 64 * 2**20
_ranked_caches: weakref.WeakKeyDictionary[DeephysReader, ByteLRUCache] = weakref.WeakKeyDictionary()
_ranked_lock = threading.Lock()


def _ranked_cache(reader: DeephysReader) -> ByteLRUCache:
    """The cache of ranked tables of ``reader`` (:data:`RANKED_CACHE_BYTES`), made on
    first use and gone with the reader."""
    with _ranked_lock:
        cache = _ranked_caches.get(reader)
        if cache is None:
            cache = _ranked_caches[reader] = ByteLRUCache(RANKED_CACHE_BYTES)
        return cache


def _counted(count: int, noun: str, plural: str | None = None) -> str:
    """``"50 neurons"``, ``"1 neuron"``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _span(count: int) -> str:
    """The valid indices of ``count`` items in words: ``"0–49"`` (an en dash), ``"0"``,
    ``"none"``."""
    return "none" if count <= 0 else "0" if count == 1 else f"0\u2013{count - 1}"


_Images = TypeVar("_Images")
_Read = TypeVar("_Read")


def _read_thumbnails(dataset: str, read: Callable[[_Images], _Read], images: _Images) -> _Read:
    """``read(images)``; a thumbnail file that changed on disk since it was opened (deleted,
    truncated, replaced by another) becomes a ``NotFoundError`` that says so."""
    try:
        return read(images)
    except FileNotFoundError:
        raise errors.NotFoundError(f"the thumbnails of {dataset!r} were deleted") from None
    except (OSError, ValueError, IndexError) as error:
        raise errors.NotFoundError(
            f"the thumbnails of {dataset!r} are unreadable: {error}"
        ) from None
