"""One record in flight: a writer thread that training never waits for.

:class:`Background` runs one job at a time on a thread of its own and hands its
outcome back to the thread that asks for it (:meth:`Background.wait`): the
callback's hooks, never the writer thread, turn outcomes into warnings or errors.
The thread is not a daemon: an interpreter that exits waits for the record in
flight, so a script that ends right after ``trainer.fit`` loses nothing.

Example::

    >>> background = Background()
    >>> background.submit(lambda: 6 * 7)
    >>> background.wait().value
    42
    >>> background.wait() is None          # nothing in flight
    True
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a job gave: its return ``value``, or the ``error`` it raised."""

    value: Any = None
    error: BaseException | None = None


class Background:
    """Runs at most one job at a time on its own thread (see the module docstring)."""

    def __init__(self, name: str = "DeephysCallback-writer") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._outcome: Outcome | None = None

    @property
    def busy(self) -> bool:
        """Whether a job is in flight or its outcome not yet collected."""
        return self._thread is not None

    def submit(self, job: Callable[[], Any]) -> None:
        """Start ``job`` on the writer thread. The previous job's outcome must have
        been collected with :meth:`wait` first (one record in flight)."""
        if self._thread is not None:
            raise RuntimeError("a job is in flight: wait() for it before submitting another")

        def run() -> None:
            try:
                self._outcome = Outcome(value=job())
            except BaseException as error:  # handed to the hooks, which decide
                self._outcome = Outcome(error=error)

        self._outcome = None
        self._thread = threading.Thread(target=run, name=self._name, daemon=False)
        self._thread.start()

    def wait(self) -> Outcome | None:
        """The outcome of the job in flight, once it is done (None without one)."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread = None
        outcome, self._outcome = self._outcome, None
        return outcome
