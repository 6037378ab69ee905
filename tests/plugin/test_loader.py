"""The plugin's loader: its flags, and TensorBoard's Python loader following both
event files of a live run (the logger's and the callback's own)."""

from __future__ import annotations

import argparse
import time

import pytest
import requests
from tensorboard.plugins import base_plugin
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard_process import running_tensorboard

from tensorboard_plugin_deephys.loader import DeephysLoader


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reload_multifile", type=lambda v: v == "true", default=None)
    DeephysLoader().define_flags(parser)
    return parser.parse_args(argv)


def test_reload_multifile_is_turned_on_only_when_left_unset():
    flags = _flags()
    DeephysLoader().fix_flags(flags)
    assert flags.reload_multifile is True
    flags = _flags("--reload_multifile", "false")
    DeephysLoader().fix_flags(flags)
    assert flags.reload_multifile is False
    with pytest.raises(base_plugin.FlagsError, match="deephys_cache_mb"):
        DeephysLoader().fix_flags(_flags("--deephys_cache_mb", "-1"))


def _scalar_steps(base: str, run: str, tag: str) -> list[int]:
    response = requests.get(
        f"{base}/data/plugin/scalars/scalars", params={"run": run, "tag": tag}, timeout=10
    )
    return [row[1] for row in response.json()] if response.status_code == 200 else []


def test_the_python_loader_keeps_reading_the_loggers_file_beside_ours(tmp_path, demo_log_dir):
    """A live run: the logger's file is written after the callback's file appeared."""
    import shutil

    run = tmp_path / "live"
    shutil.copytree(demo_log_dir[1], run)  # holds a record: the plugin is active
    logger = EventFileWriter(str(run), filename_suffix=".logger")
    logger.add_event(_event(scalar_pb("train/loss", 1.0), step=1))
    logger.flush()
    time.sleep(1.1)  # a later name: the callback's file comes after the logger's
    ours = EventFileWriter(str(run), filename_suffix=".deephys")
    ours.add_event(_event(scalar_pb("deephys/extra", 0.5), step=1))
    ours.flush()
    with running_tensorboard(tmp_path, load_fast=False) as base:
        deadline = time.monotonic() + 60
        while 1 not in _scalar_steps(base, "live", "deephys/extra"):
            assert time.monotonic() < deadline, "the callback's file was not read"
            time.sleep(0.5)
        logger.add_event(_event(scalar_pb("train/loss", 0.5), step=2))  # training goes on
        logger.flush()
        while 2 not in _scalar_steps(base, "live", "train/loss"):
            assert time.monotonic() < deadline, "the logger's later events were not read"
            time.sleep(0.5)
    logger.close()
    ours.close()


def _event(summary, step: int):
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
