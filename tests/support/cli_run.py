"""Run the ``deephys-lightning`` command as a user does: a new Python process.

Example::

    done = deephys_command("scores", str(logdir), "--csv")
    assert done.returncode == 0, done.stderr
"""

from __future__ import annotations

import os
import subprocess
import sys


def deephys_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m deephys_lightning ARGS`` in a new process (the environment of this
    one, with ``env`` on top), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "deephys_lightning", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
