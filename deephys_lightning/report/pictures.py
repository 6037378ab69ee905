"""A report's thumbnails as small PNG files, read one at a time from a step.

Thumbnails are stored as PNG (used as they are) or JPEG (made PNG here); those larger
than :data:`MAX_SIDE` pixels on a side are shrunk to fit it, keeping their shape.
Each image is read and encoded once per report, however often it is shown.
"""

from __future__ import annotations

import io

from PIL import Image
from tensorboard import errors

from deephys_lightning.report.choices import message_of
from tensorboard_plugin_deephys.log.read_model import StepData

# The longest side of a thumbnail in a report (the callback's default thumbnail_size).
MAX_SIDE = 64


class Pictures:
    """The PNG thumbnails of one step, by dataset and image index; None for a dataset
    whose thumbnails cannot be read (:attr:`notes` says why, once per dataset)."""

    def __init__(self, data: StepData) -> None:
        self._data = data
        self._png: dict[tuple[str, int], bytes | None] = {}
        self._missing: dict[str, str] = {}

    @property
    def notes(self) -> tuple[str, ...]:
        """Why the thumbnails of a dataset are not shown, one line per dataset."""
        return tuple(
            f"no thumbnails of {dataset!r} are shown: {cause}"
            for dataset, cause in self._missing.items()
        )

    def png(self, dataset: str, index: int) -> bytes | None:
        """Image ``index`` of ``dataset`` as PNG bytes, or None where the step lacks it."""
        key = (dataset, index)
        if key not in self._png:
            self._png[key] = None if dataset in self._missing else self._read(dataset, index)
        return self._png[key]

    def _read(self, dataset: str, index: int) -> bytes | None:
        try:
            encoded, media_type = self._data.thumbnail_encoded(dataset, index)
        except errors.NotFoundError as error:  # not recorded, or their file is damaged
            self._missing[dataset] = message_of(error)
            return None
        return as_small_png(encoded, media_type)


def as_small_png(encoded: bytes, media_type: str) -> bytes:
    """An image file (PNG or JPEG bytes) as a PNG at most :data:`MAX_SIDE` pixels on a
    side: the bytes themselves where they already are one."""
    if media_type == "image/png":
        with Image.open(io.BytesIO(encoded)) as image:
            if max(image.size) <= MAX_SIDE:
                return encoded
    with Image.open(io.BytesIO(encoded)) as image:
        picture = image.convert("RGB")
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()
