"""What a report shows, as asked: the options of ``deephys-lightning report`` parsed
from text, and the one error every part of the report raises.

Example::

    >>> parse_indices("3, 17", "--neurons")
    (3, 17)
    >>> parse_images("5@permuted,0@a,b")       # a dataset name may hold commas
    ((5, 'permuted'), (0, 'a,b'))
"""

from __future__ import annotations

import re

# Image choices are split at commas followed by "<index>@", so that a dataset name with
# a comma (but no ",<digits>@") stays whole.
_IMAGE_SEPARATOR = re.compile(r",(?=\s*-?\d+@)")
# What TensorBoard's errors put before their message ("Not found: ...").
_PUBLIC_ERROR_PREFIXES = ("Not found: ", "Invalid argument: ", "Permission denied: ")


class ReportError(ValueError):
    """A report that cannot be written as asked: a name or index that the log does not
    have (the message says what it has), or a log that cannot be read. One line."""


def message_of(error: BaseException) -> str:
    """The message of an error of the read model (TensorBoard's errors, ``KeyError``)
    without the prefix TensorBoard's errors add."""
    message = str(error.args[0]) if error.args else str(error)
    for prefix in _PUBLIC_ERROR_PREFIXES:
        message = message.removeprefix(prefix)
    return message


def parse_indices(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated integers (``"3,17"``), in order, each once.

    Raises:
        ReportError: an entry is not an integer (the message names ``option``).
    """
    found: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ReportError(
                f"{option} takes comma-separated integers such as 3,17, got {text!r}"
            ) from None
        if value not in found:
            found.append(value)
    return tuple(found)


def parse_images(text: str) -> tuple[tuple[int, str], ...]:
    """``INDEX@DATASET`` choices, comma-separated (``"5@permuted,0@mnist"``), in order,
    each once: the image's index among the recorded images of the set (as in the tab's
    image view) and the set's name.

    Raises:
        ReportError: an entry is not ``INDEX@DATASET``.
    """
    found: list[tuple[int, str]] = []
    for part in _IMAGE_SEPARATOR.split(text):
        index, at, dataset = part.strip().partition("@")
        try:
            choice = (int(index), dataset)
        except ValueError:
            choice = (0, "")
            at = ""
        if not at or not dataset:
            raise ReportError(
                f"--images takes INDEX@DATASET choices such as 5@permuted, got {part.strip()!r}"
            )
        if choice not in found:
            found.append(choice)
    return tuple(found)
