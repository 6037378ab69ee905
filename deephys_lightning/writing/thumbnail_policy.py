"""When a dataset's thumbnails are kept: the one thumbnail policy of the writer.

Thumbnails are made on the recording device every recorded epoch (cheap), but they
travel to rank zero, are encoded and are written only when they may be new to the
run: on a dataset's first recorded epoch of each ``fit``, ``validate`` or ``test``
call, when its images changed since the last written epoch (each image's input
fingerprint), when the record goes to a run that lacks them, or always with
``refresh_thumbnails``. Thumbnails that did travel are written only when their
content digest is not the one the run holds already. (``assets`` still refuses to
overwrite an existing pack: a storage guard, not a decision.)

Example::

    policy = ThumbnailPolicy(refresh=False)
    if policy.due("mnist", fingerprints, held, step):     # every process follows
        thumbnails = policy.to_write("mnist", pixels, held)   # None: the run has them
    policy.written()                                       # the record reached the log
"""

from __future__ import annotations

import torch

from deephys_lightning.writing.log_state import LogState
from tensorboard_plugin_deephys.log.assets import Thumbnails


class ThumbnailPolicy:
    """Decides, per dataset, whether thumbnails travel and whether they are written."""

    def __init__(self, refresh: bool = False) -> None:
        self.refresh = refresh
        # Each dataset's input fingerprints at its last written epoch (CPU, dataset
        # order), and this epoch's, until its record reaches the log.
        self._written: dict[str, torch.Tensor] = {}
        self._pending: dict[str, torch.Tensor] = {}

    def new_call(self) -> None:
        """A ``fit``, ``validate`` or ``test`` call begins: it keeps its thumbnails once."""
        self._written = {}
        self._pending = {}

    def due(
        self, name: str, fingerprints: torch.Tensor | None, held: LogState | None, step: int
    ) -> bool:
        """Whether this epoch's thumbnails of ``name`` travel and are kept (rank zero's
        view; ``held`` is the destination's state, None on other processes)."""
        if fingerprints is not None:
            self._pending[name] = fingerprints
        before = self._written.get(name)
        if self.refresh or before is None or fingerprints is None:
            return True
        if held is not None and (name not in held.thumbnails or step <= held.last_step):
            return True  # the destination lacks them, or the record goes elsewhere
        return not torch.equal(before, fingerprints)  # the same inputs give the same bits

    @staticmethod
    def to_write(name: str, pixels: torch.Tensor | None, held: LogState) -> Thumbnails | None:
        """The thumbnails of ``name`` to write, or None when none travelled or the run
        holds these very ones (by content digest)."""
        if pixels is None:
            return None
        made = Thumbnails.of(pixels.numpy())
        return None if held.thumbnails.get(name) == made.digest else made

    def written(self) -> None:
        """This epoch's record reached the log: its thumbnails count as made."""
        self._written.update(self._pending)
        self._pending = {}

    def discard(self) -> None:
        """This epoch's record did not reach the log: its thumbnails stay due."""
        self._pending = {}
