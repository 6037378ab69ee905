"""What a report holds: plain, frozen dataclasses, filled by
:func:`deephys_lightning.report.build.build_report` and drawn by
:func:`deephys_lightning.report.render.render_html`.

Numbers are floats (NaN where a value is missing); predictions are class indices,
:data:`~tensorboard_plugin_deephys.log.derived.NO_PREDICTION` where an image has none
(its classifier outputs are not finite). Thumbnails are PNG bytes (None: the step has
no thumbnail for the image).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tensorboard_plugin_deephys.log.metadata import Calibration, Detection


@dataclasses.dataclass(frozen=True)
class Picture:
    """One image shown: where it is from, its label and prediction, the value shown
    under it (a normalized activation; NaN: none shown) and its thumbnail."""

    dataset: str
    index: int
    label: int
    prediction: int
    value: float
    png: bytes | None


@dataclasses.dataclass(frozen=True)
class Header:
    """Which run, step and layer the report shows, and notes on what the log lacks."""

    run: str
    step: int
    epoch: int
    stage: str
    layer: str
    layers: tuple[str, ...]
    datasets: tuple[str, ...]  # the in-distribution set first
    class_names: tuple[str, ...]
    num_neurons: int
    notes: tuple[str, ...]  # arrays the log lacks, damaged stretches, missing thumbnails


@dataclasses.dataclass(frozen=True)
class Confusion:
    """One set's confusion: the dense ``[C, C]`` counts for a few classes (else None),
    and its most frequent off-diagonal cells ``(true, predicted, count)``."""

    matrix: np.ndarray | None
    top: tuple[tuple[int, int, int], ...]
    misclassified: int


@dataclasses.dataclass(frozen=True)
class SetOverview:
    """One dataset in the overview."""

    name: str
    role: str  # "ind" or "ood"
    images: int
    dataset_size: int | None
    accuracy: float
    calibration: Calibration | None
    left_out: tuple[str, ...]  # LeftOut.describe() of each row
    summary: dict[str, float] | None  # OODScores.summary() (OOD sets only)
    detection: tuple[Detection, ...]
    confusion: Confusion | None  # None: labels or predictions unreadable


@dataclasses.dataclass(frozen=True)
class NeuronColumn:
    """A neuron in one dataset: its maximum, whether it fires there, its scores (OOD
    sets: ``novelty``, ``spurious``, ``activation_ratio``) and its top images."""

    dataset: str
    role: str
    maximum: float
    fires: bool | None
    scores: dict[str, float] | None
    pictures: tuple[Picture, ...]


@dataclasses.dataclass(frozen=True)
class NeuronSection:
    neuron: int
    ind_max: float
    dead: bool
    mean_spurious: float  # over the OOD sets (NaN: none defined)
    columns: tuple[NeuronColumn, ...]


@dataclasses.dataclass(frozen=True)
class ImageNeuron:
    """One of an image's top neurons: its normalized activation on the image and its
    top images in the in-distribution set."""

    neuron: int
    value: float
    pictures: tuple[Picture, ...]


@dataclasses.dataclass(frozen=True)
class ImageSection:
    picture: Picture
    role: str
    position: int  # the image's index in its dataset (it may differ where images were sampled)
    top_predictions: tuple[tuple[int, float], ...] | None  # (class, probability)
    neurons: tuple[ImageNeuron, ...]
    left_out: tuple[str, ...]  # why it has no top neurons, where it has none


@dataclasses.dataclass(frozen=True)
class CategoryColumn:
    """A class in one dataset: its images, the accuracy on them, and the neurons most
    active on average over them ``(neuron, mean normalized activation)``."""

    dataset: str
    role: str
    images: int
    accuracy: float
    neurons: tuple[tuple[int, float], ...]


@dataclasses.dataclass(frozen=True)
class CategorySection:
    label: int
    columns: tuple[CategoryColumn, ...]


@dataclasses.dataclass(frozen=True)
class Report:
    header: Header
    overview: tuple[SetOverview, ...]
    neurons_chosen_by: str  # how the neurons were picked, in words
    neurons: tuple[NeuronSection, ...]
    images: tuple[ImageSection, ...]
    categories: tuple[CategorySection, ...]
