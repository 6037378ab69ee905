"""Check arrays read from a log against what their record says, before any view uses them.

An event file can be damaged, written by another program, or (with TensorBoard's
Rust loader) served although its checksum failed. Every array a view indexes with
another's values (top images index the labels, image top neurons index the
neurons...) is checked here when it is read: its dtype kind, its shape against the
record's sizes, and the range of its indices. A failed check names the kind, the
dataset and what is wrong; ``tensorboard_plugin_deephys.log.read_model`` turns it into
a 404 for that dataset and step only.

The sizes are named as in ``tensorboard_plugin_deephys.log.metadata.Kind``'s comments:
``N`` images of the dataset, ``M`` neurons of the layer, ``C`` classes, ``any`` a free
size (k, n, P).

Example::

    >>> import numpy as np
    >>> problem(Kind.LABELS, np.array([0, 5], np.int32), {"N": 2, "C": 3})
    'values must lie in [0, 3); found 5'
"""

from __future__ import annotations

import numpy as np

from tensorboard_plugin_deephys.log.metadata import MAPPED_IMAGES, Kind

# Per kind: the sizes of its axes, and the size its values index (None: not indices).
_LAYOUT: dict[Kind, tuple[tuple[str, ...], str | None]] = {
    Kind.LABELS: (("N",), "C"),
    Kind.PREDICTIONS: (("N",), "C"),
    Kind.POSITIONS: (("N",), None),
    Kind.ACTIVATIONS: (("N", "M"), None),
    # the classifier's width may differ from the class names given (export says so)
    Kind.LOGITS: (("N", "any"), None),
    Kind.TOP_CLASSES: (("N", "any"), "C"),
    Kind.TOP_PROBABILITIES: (("N", "any"), None),
    Kind.TOP_INDICES: (("M", "any"), "N"),
    Kind.TOP_VALUES: (("M", "any"), None),
    Kind.IMAGE_TOP_NEURONS: (("N", "any"), "M"),
    Kind.IMAGE_TOP_VALUES: (("N", "any"), None),
    Kind.CATEGORY_MEANS: (("C", "M"), None),
    Kind.MAXIMA: (("M",), None),
    Kind.BOTTOM_INDICES: (("M", "any"), "N"),
    Kind.BOTTOM_VALUES: (("M", "any"), None),
    Kind.HISTOGRAM_RANGE: (("M", "2"), None),
    Kind.ACTIVATION_COUNTS: (("M", "any"), None),
    Kind.FIRE_FRACTION: (("M",), None),
    Kind.INTERVAL_INDICES: (("M", "any", "any"), "N"),
    Kind.INTERVAL_VALUES: (("M", "any", "any"), None),
    Kind.PAIRS: (("any", "2"), "C"),
    Kind.PAIR_TOP_NEURONS: (("any", "any"), "M"),
    Kind.PAIR_TOP_MEANS: (("any", "any"), None),
    Kind.CONFUSIONS: (("any", "2"), "C"),
    Kind.CONFUSION_TOP_NEURONS: (("any", "any"), "M"),
    Kind.CONFUSION_TOP_MEANS: (("any", "any"), None),
    Kind.NOVELTY_RAW: (("M",), None),
    Kind.SPURIOUS: (("M",), None),
    Kind.ACTIVATION_RATIO: (("M",), None),
    Kind.TOP_MAPS: (("M", "any", "any", "any"), None),
    Kind.HEAD_WEIGHT: (("any", "M"), None),
    Kind.HEAD_BIAS: (("any",), None),
    Kind.PREDICTED_PUSH_NEURONS: (("N", "any"), "M"),
    Kind.PREDICTED_PUSH_VALUES: (("N", "any"), None),
    Kind.LABEL_PUSH_NEURONS: (("N", "any"), "M"),
    Kind.LABEL_PUSH_VALUES: (("N", "any"), None),
    Kind.MARGINS: (("N",), None),
    Kind.PAIR_PUSH_NEURONS: (("any", "any"), "M"),
    Kind.PAIR_PUSH_VALUES: (("any", "any"), None),
    Kind.ZEROED_CHANGES: (("M",), None),
    Kind.ZEROED_ACCURACY: (("M",), None),
    Kind.ZEROING_BASE: (("2",), None),
}
# Kinds that hold measurements, never indices: floats only.
_FLOAT_KINDS = frozenset({Kind.TOP_MAPS})
# Index kinds where -1 marks an empty slot: no image in the band, no prediction
# (NO_PREDICTION), an image left out for values that are not finite.
_EMPTY_SLOTS = frozenset(
    {
        Kind.INTERVAL_INDICES,
        Kind.PREDICTIONS,
        Kind.TOP_CLASSES,
        Kind.IMAGE_TOP_NEURONS,
        Kind.PREDICTED_PUSH_NEURONS,
        Kind.LABEL_PUSH_NEURONS,
        Kind.PAIR_PUSH_NEURONS,
    }
)
# Kinds whose rows pair up with another kind's: (partner, whether the whole shape
# must match; else the number of rows).
PAIRED_WITH: dict[Kind, tuple[Kind, bool]] = {
    Kind.TOP_VALUES: (Kind.TOP_INDICES, True),
    Kind.BOTTOM_VALUES: (Kind.BOTTOM_INDICES, True),
    Kind.INTERVAL_VALUES: (Kind.INTERVAL_INDICES, True),
    Kind.IMAGE_TOP_VALUES: (Kind.IMAGE_TOP_NEURONS, True),
    Kind.TOP_PROBABILITIES: (Kind.TOP_CLASSES, True),
    Kind.PAIR_TOP_NEURONS: (Kind.PAIRS, False),
    Kind.PAIR_TOP_MEANS: (Kind.PAIR_TOP_NEURONS, True),
    Kind.CONFUSION_TOP_NEURONS: (Kind.CONFUSIONS, False),
    Kind.CONFUSION_TOP_MEANS: (Kind.CONFUSION_TOP_NEURONS, True),
    Kind.TOP_MAPS: (Kind.TOP_INDICES, False),  # and one map per first top image (below)
    Kind.PREDICTED_PUSH_VALUES: (Kind.PREDICTED_PUSH_NEURONS, True),
    Kind.LABEL_PUSH_VALUES: (Kind.LABEL_PUSH_NEURONS, True),
    Kind.PAIR_PUSH_NEURONS: (Kind.PAIRS, False),
    Kind.PAIR_PUSH_VALUES: (Kind.PAIR_PUSH_NEURONS, True),
}


def pairing_problem(kind: Kind, array: np.ndarray, partner: np.ndarray) -> str | None:
    """What is wrong with ``array`` beside its :data:`PAIRED_WITH` partner, or None."""
    other, whole = PAIRED_WITH[kind]
    if whole and array.shape != partner.shape:
        return f"has shape {list(array.shape)} where its {other.value} have {list(partner.shape)}"
    if not whole and array.shape[:1] != partner.shape[:1]:
        return f"has {array.shape[0]} rows where its {other.value} have {partner.shape[0]}"
    if kind is Kind.TOP_MAPS:
        # a map for each of a neuron's first min(k, MAPPED_IMAGES) top images
        expected = (*partner.shape[:1], min(partner.shape[1], MAPPED_IMAGES))
        if array.shape[:2] != expected:
            return (
                f"has shape {list(array.shape)} where its {other.value} "
                f"{list(partner.shape)} need maps {list(expected)} first"
            )
    return None


def problem(kind: Kind, array: np.ndarray, sizes: dict[str, int]) -> str | None:
    """What is wrong with ``array`` as a ``kind`` of a record with ``sizes``, or None.

    ``sizes`` maps ``N``, ``M`` and ``C`` to the record's sizes; a size left out is not
    checked (``M`` while the layer's neuron count is being read itself).
    """
    if kind not in _LAYOUT:
        return None
    axes, bound = _LAYOUT[kind]
    if array.dtype.kind not in "iuf" or array.ndim != len(axes):
        return f"holds {array.dtype} of shape {list(array.shape)}, not {len(axes)}-d numbers"
    if kind in _FLOAT_KINDS and array.dtype.kind != "f":
        return f"holds {array.dtype}, not floats"
    for axis, (name, length) in enumerate(zip(axes, array.shape, strict=True)):
        expected = 2 if name == "2" else sizes.get(name)
        if expected is not None and length != expected:
            return f"axis {axis} has {length} entries where the record says {name} = {expected}"
    if bound is not None:
        if array.dtype.kind not in "iu":
            return f"holds {array.dtype}, not integer indices"
        if array.size:
            low, high = int(array.min()), int(array.max())
            limit = sizes.get(bound)
            lowest = -1 if kind in _EMPTY_SLOTS else 0
            if low < lowest or (limit is not None and high >= limit):
                found = low if low < lowest else high
                return f"values must lie in [{lowest}, {limit}); found {found}"
    elif kind is Kind.POSITIONS and array.size and int(array.min()) < 0:
        return f"dataset positions must be >= 0; found {int(array.min())}"
    elif kind is Kind.ACTIVATION_COUNTS and array.dtype.kind not in "iu":
        return f"holds {array.dtype}, not integer counts"
    elif kind is Kind.ACTIVATION_COUNTS and array.size and int(array.min()) < 0:
        return f"counts must be >= 0; found {int(array.min())}"
    return None
