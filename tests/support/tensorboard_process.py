"""Start a real ``tensorboard`` process on 127.0.0.1 and stop it by its own PID."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time

import requests

_URL = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/")


@contextlib.contextmanager
def running_tensorboard(
    logdir,
    *,
    load_fast: bool,
    extra=(),
    timeout: float = 90.0,
    wait_for_runs: bool = True,
    runs: int = 1,
):
    """Yield the base URL of a tensorboard serving ``logdir`` once Deephys data is loaded.

    With ``wait_for_runs=False`` it is enough that the plugin is enabled (some Deephys
    tag is loaded), even while no run has a record yet; else ``runs`` runs must be
    listed (several groups of ``--logdir_spec`` load one after another). A ``logdir`` of the form
    ``("--logdir_spec", "a:DIR1,b:DIR2")`` is passed as that flag instead.
    """
    flag = list(logdir) if isinstance(logdir, tuple) else ["--logdir", str(logdir)]
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        *flag,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        f"--load_fast={'true' if load_fast else 'false'}",
        "--reload_interval",
        "1",
        *extra,
    ]
    with launched(command, timeout) as (process, base, lines):
        deadline = time.monotonic() + timeout
        while True:  # wait until the data is loaded and the plugin is enabled
            try:
                listing = requests.get(f"{base}/data/plugins_listing", timeout=10).json()
                if listing.get("deephys", {}).get("enabled"):
                    if not wait_for_runs:
                        break
                    listed = requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()
                    if len(listed["runs"]) >= runs:
                        break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tensorboard never showed Deephys data:\n" + "".join(lines))
            time.sleep(0.5)
        running_tensorboard.pid = process.pid
        yield base


@contextlib.contextmanager
def launched(command: list[str], timeout: float = 90.0):
    """Start the tensorboard ``command`` line (with ``--port 0``) and yield
    ``(process, base URL, output lines so far)`` once it prints its URL; stop it by its
    own PID at the end."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found: list[str] = []

    def pump():
        for line in process.stdout:
            lines.append(line)
            match = _URL.search(line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not found:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tensorboard did not start:\n" + "".join(lines))
            time.sleep(0.05)
        yield process, found[0], lines
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a server this test started, by its own PID: asked first, then killed."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
