"""The tab's JavaScript unit tests (tests/js/*.test.mjs) under node's own test runner.

They test the frontend's pure modules (tensorboard_plugin_deephys/static/state.js:
the tab's state, its URL form, the number parser, the Top k clamp) without a browser;
the browser tests (tests/browser/) test the tab as a whole; tests/js/percent.test.mjs
checks dom.js's formatters.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parents[1] / "js"


def test_static_js_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the tab's JavaScript unit tests (tests/js) need it")
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs under {JS_TESTS}"
    # The files by name, not the folder: node 21 and later take --test's arguments as globs,
    # and a folder as a glob matches only itself (nodejs/node#50219).
    result = subprocess.run(
        [node, "--test", *map(str, files)],
        cwd=JS_TESTS.parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output}"
    assert "# fail 0" in output, output
