"""What a log directory already holds, kept beside the events.

``<log_dir>/plugins/deephys/state.json`` (``metadata.state_path``; TensorBoard's
place for plugin assets)
records each step written, with the stage that wrote it, and a digest of each
dataset's thumbnails. The callback reads it before writing, so that a step is written
once per directory (a run resumed into the same directory, even from an older
checkpoint, skips the steps it holds; an evaluation at a held step goes to a run of its
own) and unchanged thumbnails are not written again.

Example::

    state = LogState.load("lightning_logs/version_0")
    if state.holder(step) is None:
        ...write...
        state.add(step, "fit")
        state.save()
"""

from __future__ import annotations

import dataclasses
import json

from tensorboard_plugin_deephys.log import metadata, storage
from tensorboard_plugin_deephys.log.json_documents import parse_json


@dataclasses.dataclass
class LogState:
    """The Deephys bookkeeping of one run directory."""

    log_dir: str
    last_step: int = -1
    thumbnails: dict[str, str] = dataclasses.field(default_factory=dict)  # dataset -> digest
    steps: dict[int, str] = dataclasses.field(default_factory=dict)  # step -> stage
    # State written before steps were kept: every step up to this one counts as held.
    legacy_until: int = -1

    def holder(self, step: int) -> str | None:
        """The stage whose record holds ``step`` here ("fit" for a step of a state
        written before stages were kept), or None when the step is free."""
        if step in self.steps:
            return self.steps[step]
        return "fit" if step <= self.legacy_until else None

    def forget_lost_thumbnails(self) -> list[str]:
        """Check that the thumbnail file of each digest held is still there (one
        existence check per dataset) and forget those that are gone (an object store
        that lost its objects, a folder deleted by hand), so that they are written
        again; returns the datasets forgotten."""
        lost = []
        for name, digest in list(self.thumbnails.items()):
            files = (
                metadata.asset_path(self.log_dir, metadata.thumbnail_asset_name(name, digest, s))
                for s in (metadata.PACK_SUFFIX, metadata.NPY_SUFFIX)
            )
            try:
                present = any(storage.exists(path) for path in files)
            except (OSError, ImportError):  # unreachable: the write will say so
                continue
            if not present:
                del self.thumbnails[name]
                lost.append(name)
        return lost

    def add(self, step: int, stage: str) -> None:
        self.steps[step] = stage
        self.last_step = max(self.last_step, step)

    @staticmethod
    def path(log_dir: str) -> str:
        return metadata.state_path(log_dir)

    @classmethod
    def load(cls, log_dir: str) -> LogState:
        """The saved state of ``log_dir``; an empty one when there is none yet."""
        try:
            path = cls.path(log_dir)
            raw = parse_json(storage.read_bytes(path), path)  # bounded, like the log's
            return cls.from_dict(log_dir, raw)
        except FileNotFoundError:
            return cls(log_dir=log_dir)
        except (OSError, ValueError, TypeError, AttributeError, OverflowError):
            # An unreadable state file must not stop training: start afresh, but keep the
            # steps monotonic from what this process knows.
            return cls(log_dir=log_dir)

    def add_found(self, steps: dict[int, str]) -> None:
        """Count ``steps`` (step -> stage, as ``event_files.recorded_steps`` finds them in
        the events) as held: the events, not this file, are what a step rewritten would
        hide. A stage of "" (an older record) counts as "fit"."""
        for step, stage in steps.items():
            self.steps.setdefault(step, stage or "fit")
            self.last_step = max(self.last_step, step)

    def merge(self, other: LogState) -> None:
        """Take the later step and every known thumbnail digest of ``other``."""
        self.last_step = max(self.last_step, other.last_step)
        self.legacy_until = max(self.legacy_until, other.legacy_until)
        for step, stage in other.steps.items():
            self.steps.setdefault(step, stage)
        for name, digest in other.thumbnails.items():
            self.thumbnails.setdefault(name, digest)

    def save(self) -> None:
        """Write atomically (a crash never leaves half a file; an object store gets one
        whole object)."""
        data = json.dumps(self.to_dict(), indent=1).encode("utf-8")
        storage.write_bytes(self.path(self.log_dir), data)

    def to_dict(self) -> dict:
        return {
            "last_step": self.last_step,
            "thumbnails": dict(self.thumbnails),
            "steps": {str(step): stage for step, stage in sorted(self.steps.items())},
            "legacy_until": self.legacy_until,
        }

    @classmethod
    def from_dict(cls, log_dir: str, raw: dict) -> LogState:
        last_step = int(raw.get("last_step", -1))
        steps = {int(k): str(v) for k, v in (raw.get("steps") or {}).items()}
        legacy = int(raw.get("legacy_until", -1)) if "steps" in raw else last_step
        return cls(
            log_dir=log_dir,
            last_step=last_step,
            thumbnails={str(k): str(v) for k, v in raw.get("thumbnails", {}).items()},
            steps=steps,
            legacy_until=legacy,
        )
