"""Where a run's directory is, under TensorBoard's ``--logdir`` or ``--logdir_spec``.

Thumbnails are files beside a run's events, so the plugin needs each run's
directory, which TensorBoard's data provider does not give. TensorBoard names runs
by their path relative to ``--logdir``; under ``--logdir_spec name:DIR,...`` it
prefixes that relative path with the group's name (``name/.`` is ``DIR`` itself;
an unnamed group adds no prefix). :class:`RunDirectories` undoes that naming.

Example::

    dirs = RunDirectories(logdir="", logdir_spec="a:/logs/one,b:s3://bucket/two")
    dirs.path("a/.")           # "/logs/one"
    dirs.path("b/version_0")   # "s3://bucket/two/version_0"
"""

from __future__ import annotations

import os
import re

from tensorboard_plugin_deephys.log import storage

_URI = re.compile("[a-zA-Z][0-9a-zA-Z.]*://.*")  # as TensorBoard tells a URL from a path


def parse_logdir_spec(logdir_spec: str) -> dict[str, str | None]:
    """``--logdir_spec``'s directories, each mapped to its group name (None: unnamed),
    parsed by TensorBoard's own rules (``name:path`` unless the colon belongs to a
    URL, a Windows drive or a path that starts with ``/``)."""
    groups: dict[str, str | None] = {}
    for spec in filter(None, logdir_spec.split(",")):
        named = (
            _URI.match(spec) is None
            and ":" in spec
            and spec[0] != "/"
            and not os.path.splitdrive(spec)[0]
        )
        name, path = spec.partition(":")[::2] if named else (None, spec)
        if _URI.match(path) is None:
            path = os.path.realpath(os.path.expanduser(path))
        groups[path] = name or None  # an empty name adds no prefix, as unnamed groups
    return groups


class RunDirectories:
    """Each run's directory, from the flags TensorBoard was started with."""

    def __init__(self, logdir: str | None = None, logdir_spec: str | None = None) -> None:
        self._logdir = logdir or ""
        self._groups = parse_logdir_spec(logdir_spec or "") if not self._logdir else {}

    @classmethod
    def of(cls, context) -> RunDirectories:
        """The directories of a plugin's ``TBContext``."""
        flags = getattr(context, "flags", None)
        return cls(context.logdir, getattr(flags, "logdir_spec", None))

    def path(self, run: str) -> str:
        """The directory of ``run``; ``LookupError`` (saying why) when none is known."""
        if self._logdir:
            return _below(self._logdir, run)
        # Groups whose names are prefixes of each other (a, a/b) may both name a run:
        # the longest name first, unless only a shorter one's folder holds the run.
        named = [
            _below(root, run[len(name) + 1 :] or ".")
            for root, name in sorted(self._groups.items(), key=lambda group: -len(group[1] or ""))
            if name is not None and (run == name or run.startswith(f"{name}/"))
        ]
        if len(named) > 1:
            return next((c for c in named if storage.isdir(c)), named[0])
        if named:  # a group's name before an unnamed group's folder of that name
            return named[0]
        unnamed = [_below(root, run) for root, name in self._groups.items() if name is None]
        if not unnamed:
            known = ", ".join(f"{n}:{p}" if n else p for p, n in self._groups.items())
            raise LookupError(
                f"no directory of run {run!r} is known: TensorBoard was started without "
                f"--logdir, and no --logdir_spec group names it ({known or 'none given'})"
            )
        if len(unnamed) == 1:
            return unnamed[0]
        # Unnamed groups may share run names: the first that holds the run.
        return next((c for c in unnamed if storage.isdir(c)), unnamed[0])


def _below(root: str, run: str) -> str:
    parts = [part for part in run.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:  # TensorBoard never names a run so: a request must not climb out
        raise LookupError(f"run {run!r} is not a directory below {root}")
    return storage.join(root, *parts) if parts else root
