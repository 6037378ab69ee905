"""The entry point TensorBoard loads: defines the plugin's flags, then builds it.

Registered in ``pyproject.toml`` as ``tensorboard_plugins: deephys =
tensorboard_plugin_deephys.loader:DeephysLoader``. Light on purpose: the web plugin is imported only
when TensorBoard asks for it.

Example::

    tensorboard --logdir lightning_logs --deephys_cache_mb 1024
"""

from __future__ import annotations

from tensorboard.plugins import base_plugin

DEFAULT_CACHE_MB = 512


class DeephysLoader(base_plugin.TBLoader):
    """Adds ``--deephys_cache_mb`` and loads :class:`DeephysPlugin`."""

    def define_flags(self, parser) -> None:
        group = parser.add_argument_group("deephys")
        group.add_argument(
            "--deephys_cache_mb",
            metavar="MB",
            type=int,
            default=DEFAULT_CACHE_MB,
            help="Memory for decoded Deephys arrays, shared by all requests "
            f"(least recently used first out; default {DEFAULT_CACHE_MB}).",
        )

    def fix_flags(self, flags) -> None:
        if flags.deephys_cache_mb < 0:
            raise base_plugin.FlagsError(
                f"--deephys_cache_mb must be >= 0, got {flags.deephys_cache_mb}"
            )
        # DeephysCallback writes an event file of its own beside the logger's. Without
        # --reload_multifile, TensorBoard's Python loader (--load_fast=false, and every
        # s3:// logdir) follows only the newest file of a run, and a live run's training
        # curves would stop updating once the callback's file appears. Left unset, it is
        # turned on here; an explicit --reload_multifile=false is kept. The Rust loader
        # reads every file of a run anyway.
        if getattr(flags, "reload_multifile", False) is None:
            flags.reload_multifile = True

    def load(self, context: base_plugin.TBContext):
        from tensorboard_plugin_deephys.deephys_plugin import DeephysPlugin

        cache_mb = getattr(context.flags, "deephys_cache_mb", DEFAULT_CACHE_MB)
        return DeephysPlugin(context, cache_bytes=cache_mb * 1024 * 1024)
