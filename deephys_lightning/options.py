"""The checks of ``DeephysCallback``'s arguments: one named helper per kind of option.

Each returns the value to keep (normalised: a list, a tuple) or raises
``MisconfigurationException`` naming the option, what it got and what it takes, so a
wrong argument fails where the callback is made, not an epoch later.

Example::

    >>> check_layers("backbone.fc1", None)
    ['backbone.fc1']
    >>> check_int("max_images", None, optional=True) is None
    True
    >>> try:
    ...     check_flag("strict", "yes")
    ... except MisconfigurationException as error:
    ...     print(error)
    DeephysCallback(strict=...) must be True or False, got 'yes'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException

from deephys_lightning import detection

# The evaluations that can record: validation in fit, trainer.validate, trainer.test.
STAGES = ("fit", "validate", "test")


def _refuse(option: str, message: str) -> MisconfigurationException:
    return MisconfigurationException(f"DeephysCallback({option}=...) {message}")


def check_layers(layer: str | None, layers: Sequence[str] | None) -> list[str]:
    """Exactly one of ``layer`` and ``layers``: the layer names, without repeats."""
    if (layer is None) == (layers is None):
        raise MisconfigurationException(
            "DeephysCallback needs exactly one of layer='dotted.module.name' or "
            f"layers=[...], got layer={layer!r} and layers={layers!r}"
        )
    names = [layer] if layer is not None else list(layers or [])
    if not names or not all(isinstance(n, str) and n for n in names):
        raise _refuse(
            "layer/layers",
            "must be dotted module names such as 'backbone.fc1', got "
            f"{layer if layer is not None else layers!r}",
        )
    if len(set(names)) != len(names):
        raise _refuse("layers", f"repeats a name: {names}")
    return names


def check_int(option: str, value: Any, minimum: int = 1, *, optional: bool = False) -> Any:
    """An integer of at least ``minimum`` (or None, when ``optional``)."""
    if optional and value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _refuse(option, f"must be an integer >= {minimum}, got {value!r}")
    return value


def check_flag(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse(option, f"must be True or False, got {value!r}")
    return value


def check_names(option: str, names: Sequence[str] | None) -> list[str] | None:
    """A non-empty list of distinct strings, or None."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise _refuse(option, f"must be a list of strings, got {names!r}")
    if len(names) == 0:
        what = "class" if option == "class_names" else "dataloader"
        raise _refuse(option, f"is empty; give one name per {what}")
    if option == "dataset_names" and len(set(names)) != len(names):
        raise _refuse(option, f"repeats a name: {list(names)}")
    return list(names)


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    if isinstance(stages, str) or not stages or not all(s in STAGES for s in stages):
        raise _refuse(
            "stages",
            f"must be a non-empty list drawn from {list(STAGES)}, got {stages!r} (to record "
            "nothing, leave the callback out)",
        )
    return tuple(stages)


def check_ind(ind: Any) -> str | int | None:
    if ind is not None and not isinstance(ind, (str, int)):
        raise _refuse("ind", f"must be a dataset name or a dataloader index, got {ind!r}")
    return ind


def check_optional_name(option: str, name: Any) -> str | None:
    """A module name (a non-empty string), or None."""
    if name is not None and (not isinstance(name, str) or not name):
        raise _refuse(option, f"must be a module name such as 'fc', got {name!r}")
    return name


def check_reduction(reduction: Any) -> Any:
    if not (callable(reduction) or reduction in ("auto", "none")):
        raise _refuse("reduction", f"must be 'auto', 'none' or a function, got {reduction!r}")
    return reduction


def check_output_selector(selector: Any, layers: Sequence[str]) -> Any:
    """A selector, or a dict of selectors by recorded layer."""
    if isinstance(selector, Mapping):
        unknown = sorted(set(selector) - set(layers))
        if unknown:
            raise _refuse(
                "output_selector",
                f"names layers {unknown} that are not recorded; recorded layers: {list(layers)}",
            )
    return selector


def check_denormalize(denormalize: Any) -> Any:
    if (
        denormalize is not None
        and not callable(denormalize)
        and not (isinstance(denormalize, (tuple, list)) and len(denormalize) == 2)
    ):
        raise _refuse("denormalize", f"must be (mean, std) or a function, got {denormalize!r}")
    return denormalize


def check_record_logits(record_logits: Any) -> bool | None:
    if record_logits not in (None, True, False):
        raise _refuse("record_logits", f"must be True, False or None, got {record_logits!r}")
    return record_logits


def check_detectors(detectors: Sequence[str] | None) -> tuple[str, ...]:
    try:
        return detection.check_detectors(detectors)
    except ValueError as error:
        raise MisconfigurationException(f"DeephysCallback(ood_detectors=...): {error}") from None


def check_reference(reference: Any, detectors: tuple[str, ...]) -> Any:
    """``reference`` (a dataloader, or None) for the detectors that are fitted."""
    if reference is None:
        return None
    if isinstance(reference, (str, bytes)) or not hasattr(reference, "__iter__"):
        raise MisconfigurationException(
            f"DeephysCallback(reference=...) takes a dataloader of reference images (for "
            f"example a fixed subset of the training set), got {type(reference).__name__}"
        )
    if not any(d in detection.FITTED_DETECTORS for d in detectors):
        raise MisconfigurationException(
            "DeephysCallback(reference=...) fits the OOD detectors on features, but "
            f"ood_detectors={list(detectors)} has none of them; add some of "
            f"{list(detection.FITTED_DETECTORS)}, e.g. ood_detectors=['msp', 'knn', 'vim']"
        )
    return reference
