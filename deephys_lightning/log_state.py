"""What a log directory already holds, kept beside the events.

``<log_dir>/plugins/deephys/state.json`` (``metadata.state_path``; TensorBoard's
place for plugin assets)
records the last step written and a digest of each dataset's thumbnails. The
callback reads it before writing, so that a run resumed into the same directory,
even from an older checkpoint, never writes a step at or before one already there
(TensorBoard would drop the newer data) and does not write unchanged thumbnails again.

Example::

    state = LogState.load("lightning_logs/version_0")
    if step > state.last_step:
        ...write...
        state.last_step = step
        state.save()
"""

from __future__ import annotations

import dataclasses
import json
import os

from tb_plugin import metadata


@dataclasses.dataclass
class LogState:
    """The Deephys bookkeeping of one run directory."""

    log_dir: str
    last_step: int = -1
    thumbnails: dict[str, str] = dataclasses.field(default_factory=dict)  # dataset -> digest

    @staticmethod
    def path(log_dir: str) -> str:
        return metadata.state_path(log_dir)

    @classmethod
    def load(cls, log_dir: str) -> LogState:
        """The saved state of ``log_dir``; an empty one when there is none yet."""
        try:
            with open(cls.path(log_dir), encoding="utf-8") as handle:
                raw = json.load(handle)
            return cls(
                log_dir=log_dir,
                last_step=int(raw.get("last_step", -1)),
                thumbnails={str(k): str(v) for k, v in raw.get("thumbnails", {}).items()},
            )
        except FileNotFoundError:
            return cls(log_dir=log_dir)
        except (OSError, ValueError, TypeError, AttributeError):
            # An unreadable state file must not stop training: start afresh, but keep the
            # steps monotonic from what this process knows.
            return cls(log_dir=log_dir)

    def merge(self, other: LogState) -> None:
        """Take the later step and every known thumbnail digest of ``other``."""
        self.last_step = max(self.last_step, other.last_step)
        for name, digest in other.thumbnails.items():
            self.thumbnails.setdefault(name, digest)

    def save(self) -> None:
        """Write atomically (a crash never leaves half a file)."""
        path = self.path(self.log_dir)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(
                {"last_step": self.last_step, "thumbnails": self.thumbnails}, handle, indent=1
            )
        os.replace(tmp, path)

    def to_dict(self) -> dict:
        return {"last_step": self.last_step, "thumbnails": dict(self.thumbnails)}

    @classmethod
    def from_dict(cls, log_dir: str, raw: dict) -> LogState:
        return cls(
            log_dir=log_dir,
            last_step=int(raw.get("last_step", -1)),
            thumbnails=dict(raw.get("thumbnails", {})),
        )
