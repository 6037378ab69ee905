"""A report's content from a log: every number read through the read model that
``read_log`` and the Deephys tab share (``tensorboard_plugin_deephys.log.read_model``
and ``derived``), so the report says what the tab says. Writes nothing.

Example::

    from deephys_lightning import read_log
    from deephys_lightning.report.build import build_report

    report = build_report(read_log("lightning_logs/version_0"), neurons=(3, 17))
    report.overview[1].summary["spurious_mean"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from tensorboard import errors

from deephys_lightning.report.choices import ReportError, message_of
from deephys_lightning.report.content import (
    CategoryColumn,
    CategorySection,
    Confusion,
    Header,
    ImageNeuron,
    ImageSection,
    NeuronColumn,
    NeuronSection,
    Picture,
    Report,
    SetOverview,
)
from deephys_lightning.report.pictures import Pictures
from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.read_model import StepData, TopImages, UnknownNameError

if TYPE_CHECKING:  # read_log's class: TensorBoard's loaders are imported where a log is read
    from deephys_lightning.reader import DeephysLog

DEFAULT_NEURONS = 3  # neuron sections without --neurons
TOP_IMAGES = 6  # per neuron and dataset (at most the recorded top_k)
IMAGE_NEURONS = 5  # top neurons per image section
CATEGORY_NEURONS = 8  # top neurons per category and dataset
DENSE_CONFUSION = 20  # up to this many classes the overview draws the whole matrix
TOP_CONFUSIONS = 10  # else, the most frequent confusions of each set
SECTION_SCORES = ("novelty", "spurious", "activation_ratio")


@contextlib.contextmanager
def said_in_one_line() -> Iterator[None]:
    """TensorBoard's errors of the read model and ``read_log``'s ``KeyError`` as a
    :class:`ReportError` with their message."""
    try:
        yield
    except (errors.PublicError, KeyError) as error:
        raise ReportError(message_of(error)) from None


def build_report(
    log: DeephysLog,
    *,
    run_name: str | None = None,
    step: int | None = None,
    layer: str | None = None,
    neurons: Sequence[int] | None = None,
    images: Sequence[tuple[int, str]] = (),
    categories: Sequence[int] = (),
    k: int = TOP_IMAGES,
) -> Report:
    """The content of a report of ``log`` at ``step`` (default: the latest) for
    ``layer`` (default: the first recorded): the overview, a section per neuron
    (default: the :data:`DEFAULT_NEURONS` with the highest mean spurious score across
    the OOD sets), per image ``(index, dataset)`` and per category. ``run_name``
    names the run on the page (default: the log's run name).

    Raises:
        ReportError: a step, layer, dataset, neuron, image or class that the log does
            not have (the message says which it has), or data that cannot be read.
    """
    if k < 1:
        raise ReportError(f"k must be at least 1, got {k}")
    with said_in_one_line():
        data = log.at(step)
        layer = data.record.layers[0] if layer is None else layer
        data.check_layer(layer)
        _check_choices(data, layer, neurons, images, categories)
        pictures = Pictures(data)
        k = min(k, data.record.top_k)
        if neurons is None:
            neurons, chosen_by = _default_neurons(data, layer)
        else:
            chosen_by = "as asked"
        overview = tuple(_set_overview(data, layer, name) for name in data.record.datasets)
        neuron_sections = tuple(_neuron_section(data, layer, j, k, pictures) for j in neurons)
        image_sections = tuple(_image_section(data, layer, i, d, k, pictures) for i, d in images)
        category_sections = tuple(_category_section(data, layer, c) for c in categories)
        header = _header(log, data, layer, pictures.notes, run_name or log.run)
    return Report(
        header=header,
        overview=overview,
        neurons_chosen_by=chosen_by,
        neurons=neuron_sections,
        images=image_sections,
        categories=category_sections,
    )


def _check_choices(
    data: StepData,
    layer: str,
    neurons: Sequence[int] | None,
    images: Sequence[tuple[int, str]],
    categories: Sequence[int],
) -> None:
    """Every choice checked before anything is read for it."""
    for neuron in neurons or ():
        data.check_neuron(layer, neuron)
    for index, dataset in images:
        data.check_dataset(dataset)
        data.check_image(dataset, index)
    for label in categories:
        data.check_class("category", label)


def _default_neurons(data: StepData, layer: str) -> tuple[tuple[int, ...], str]:
    """The neurons with the highest mean spurious score across the OOD sets (live
    neurons with a defined score first); without OOD sets, the highest InD maxima."""
    count = min(DEFAULT_NEURONS, data.num_neurons(layer))
    if not data.record.ood:
        order = derived.descending_order(data.ind_max(layer), count)
        return tuple(int(j) for j in order), f"the {count} with the highest InD maximum"
    means = _mean_spurious(data, layer)
    order = derived.descending_order(means, count)
    return (
        tuple(int(j) for j in order),
        f"the {count} with the highest mean spurious score across the OOD sets",
    )


def _mean_spurious(data: StepData, layer: str) -> np.ndarray:
    """float64 ``[M]``: each neuron's spurious score averaged over the OOD sets where
    it is defined; NaN for dead neurons and where it is defined on none."""
    spurious = np.stack([data.scores(layer, ood).spurious for ood in data.record.ood])
    means = np.array([derived.finite_mean(column) for column in spurious.T])
    means[derived.dead_neurons(data.ind_max(layer))] = np.nan
    return means


def _header(
    log: DeephysLog, data: StepData, layer: str, picture_notes: tuple[str, ...], run: str
) -> Header:
    record = data.record
    notes = list(picture_notes)
    missing = log.missing(record.step)
    if missing:
        shown = ", ".join(repr(tag) for tag in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        notes.append(f"the log lacks {len(missing)} arrays this step wrote: {shown}{more}")
    notes += [f"damaged event file: {stretch}" for stretch in log.damage]
    return Header(
        run=run,
        step=record.step,
        epoch=record.epoch,
        stage=record.stage,
        layer=layer,
        layers=record.layers,
        datasets=record.datasets,
        class_names=record.class_names,
        num_neurons=data.num_neurons(layer),
        notes=tuple(notes),
    )


def _set_overview(data: StepData, layer: str, name: str) -> SetOverview:
    ood = name != data.record.ind
    scores = data.scores(layer, name) if ood else None
    return SetOverview(
        name=name,
        role=data.role(name),
        images=len(data.labels(name)),
        dataset_size=data.record.dataset_sizes.get(name),
        accuracy=data.accuracy(name),
        calibration=data.calibration(name),
        left_out=tuple(row.describe() for row in data.left_out(name, layer)),
        summary=None if scores is None else scores.summary(),
        detection=tuple(data.detection(name)) if ood else (),
        confusion=_confusion(data, name),
    )


def _confusion(data: StepData, name: str) -> Confusion | None:
    """The set's confusion as the tab's summary gives it (``derived`` through the read
    model): the matrix for a few classes, the most frequent confusions for any."""
    try:
        cells = data.confusion_cells(name)
        dense = len(data.record.class_names) <= DENSE_CONFUSION
        matrix = data.confusion_matrix(name) if dense else None
    except UnknownNameError:
        raise
    except errors.NotFoundError:  # labels or predictions unreadable: said by the accuracy
        return None
    confused = cells[cells[:, 0] != cells[:, 1]]
    return Confusion(
        matrix=matrix,
        top=tuple((int(a), int(b), int(n)) for a, b, n in confused[:TOP_CONFUSIONS].tolist()),
        misclassified=int(confused[:, 2].sum()),
    )


def _neuron_section(
    data: StepData, layer: str, neuron: int, k: int, pictures: Pictures
) -> NeuronSection:
    picked = data.neuron(layer, neuron)
    ind_max = data.ind_max(layer)[neuron : neuron + 1]
    columns = []
    spurious = []
    for name in data.record.datasets:
        maximum = float(data.maxima(layer, name)[neuron])
        scores = None
        if name != data.record.ind:
            per_neuron = data.scores(layer, name).per_neuron()
            scores = {score: float(per_neuron[score][neuron]) for score in SECTION_SCORES}
            spurious.append(scores["spurious"])
        columns.append(
            NeuronColumn(
                dataset=name,
                role=data.role(name),
                maximum=maximum,
                fires=derived.fires(maximum),
                scores=scores,
                pictures=_pictures(pictures, name, picked.top_images(name, k)),
            )
        )
    dead = bool(derived.dead_neurons(ind_max)[0])
    return NeuronSection(
        neuron=neuron,
        ind_max=float(ind_max[0]),
        dead=dead,
        mean_spurious=float("nan") if dead else derived.finite_mean(np.array(spurious)),
        columns=tuple(columns),
    )


def _image_section(
    data: StepData, layer: str, index: int, dataset: str, k: int, pictures: Pictures
) -> ImageSection:
    top = data.image_top_neurons(layer, dataset, index, IMAGE_NEURONS)
    ind = data.record.ind
    neurons = tuple(
        ImageNeuron(
            neuron=int(j),
            value=float(value),
            pictures=_pictures(pictures, ind, data.neuron(layer, int(j)).top_images(ind, k)),
        )
        for j, value in zip(top.neurons.tolist(), top.values.tolist(), strict=True)
    )
    predictions = data.top_predictions(dataset, index)
    return ImageSection(
        picture=Picture(
            dataset=dataset,
            index=index,
            label=int(data.labels(dataset)[index]),
            prediction=int(data.predictions(dataset)[index]),
            value=float("nan"),
            png=pictures.png(dataset, index),
        ),
        role=data.role(dataset),
        position=int(data.positions(dataset)[index]),
        top_predictions=None
        if predictions is None
        else tuple(
            (int(c), float(p))
            for c, p in zip(
                predictions.classes.tolist(), predictions.probabilities.tolist(), strict=True
            )
        ),
        neurons=neurons,
        left_out=() if neurons else tuple(row.describe() for row in data.left_out(dataset, layer)),
    )


def _category_section(data: StepData, layer: str, label: int) -> CategorySection:
    columns = []
    for name in data.record.datasets:
        labels, predictions = data.labels(name), data.predictions(name)
        members = labels == label
        try:
            top = data.category_top_neurons(layer, name, label)
            ranked = tuple(
                (int(j), float(v))
                for j, v in zip(
                    top.neurons[:CATEGORY_NEURONS].tolist(),
                    top.values[:CATEGORY_NEURONS].tolist(),
                    strict=True,
                )
            )
        except UnknownNameError:
            raise
        except errors.NotFoundError:  # a step without category means
            ranked = ()
        columns.append(
            CategoryColumn(
                dataset=name,
                role=data.role(name),
                images=int(members.sum()),
                accuracy=derived.accuracy(labels[members], predictions[members]),
                neurons=ranked,
            )
        )
    return CategorySection(label=label, columns=tuple(columns))


def _pictures(pictures: Pictures, dataset: str, top: TopImages) -> tuple[Picture, ...]:
    return tuple(
        Picture(
            dataset=dataset,
            index=int(index),
            label=int(label),
            prediction=int(prediction),
            value=float(value),
            png=pictures.png(dataset, int(index)),
        )
        for index, label, prediction, value in zip(
            top.indices.tolist(),
            top.labels.tolist(),
            top.predictions.tolist(),
            top.normalized.tolist(),
            strict=True,
        )
    )
