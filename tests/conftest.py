from __future__ import annotations

import fault_tally  # tests/support is on the path (pyproject.toml: pythonpath)
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


# -- the fault suite's totals (tests marked "fault"; see tests/fault_tally.py) ----------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("fault") is None or report.skipped:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        fault_tally.TOTALS["cases"] += 1
        fault_tally.TOTALS["survived"] += bool(report.passed and report.when == "call")


def pytest_configure(config):
    config.addinivalue_line("markers", "fault: a case of the fault suite (tests/fault_tally.py)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped where there is none)")


def pytest_terminal_summary(terminalreporter):
    if fault_tally.TOTALS["cases"]:
        terminalreporter.write_line(fault_tally.line())
