from __future__ import annotations

import pytest

from deephys_lightning import read_log
from deephys_lightning.demo.cli import train_demo


@pytest.fixture(scope="session")
def demo_log_dir(tmp_path_factory):
    """The demo's own log at small size: two epochs of Colored digits."""
    logdir = tmp_path_factory.mktemp("demo_logs")
    run_dir = train_demo(logdir, epochs=2, train_per_class=40, val_per_class=6, quiet=True)
    return logdir, run_dir


@pytest.fixture(scope="session")
def demo_log(demo_log_dir):
    return read_log(demo_log_dir[1])
