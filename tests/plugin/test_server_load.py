"""20 concurrent clients for 30 seconds against a real tensorboard: no server error,
no growth of memory, hostile parameters answered with 4xx JSON."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
import requests
from tensorboard_process import running_tensorboard

CLIENTS = 20
SECONDS = 30


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _queries(run: str, rng: random.Random) -> str:
    layer = "backbone.fc1"
    choices = [
        f"neuron?run={run}&layer={layer}&neuron={rng.randrange(50)}&k={rng.randrange(1, 30)}",
        f"image?run={run}&layer={layer}&dataset=permuted&index={rng.randrange(60)}",
        f"category?run={run}&layer={layer}&dataset=colored&label={rng.randrange(10)}",
        f"summary?run={run}&layer={layer}",
        f"thumbnail?run={run}&dataset=arbitrary&index={rng.randrange(60)}",
        f"scores_over_time?run={run}&layer={layer}&dataset=drifted",
        # hostile ones
        f"neuron?run={run}&layer={layer}&neuron=-5",
        f"neuron?run={run}&layer={layer}&neuron=1e9",
        f"image?run={run}&layer=<script>&dataset=x&index=0",
        "thumbnail?run=../../etc&dataset=passwd&index=0",
        f"category?run={run}&layer={layer}&dataset=colored&label=99999999999999999999",
    ]
    return rng.choice(choices)


@pytest.mark.parametrize("load_fast", [False], ids=["load_fast=false"])
def test_twenty_clients_for_thirty_seconds(demo_log_dir, load_fast):
    run = os.path.relpath(demo_log_dir[1], demo_log_dir[0])
    with running_tensorboard(demo_log_dir[0], load_fast=load_fast) as base:
        pid = running_tensorboard.pid
        statuses: dict[int, int] = {}
        failures: list[str] = []
        lock = threading.Lock()
        warm = threading.Event()
        samples: list[int] = []
        deadline = time.monotonic() + SECONDS

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with requests.Session() as session:
                while time.monotonic() < deadline:
                    query = _queries(run, rng)
                    try:
                        response = session.get(f"{base}/data/plugin/deephys/{query}", timeout=30)
                    except requests.RequestException as error:
                        with lock:
                            failures.append(f"{query}: {error}")
                        continue
                    ok = response.status_code < 500
                    if response.status_code >= 400:
                        ok = (
                            ok
                            and response.headers["Content-Type"].startswith("application/json")
                            and "error" in response.json()
                        )
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        if not ok:
                            failures.append(
                                f"{query}: {response.status_code} {response.text[:200]}"
                            )

        def sampler() -> None:
            time.sleep(SECONDS / 3)  # after warm-up: caches filled
            warm.set()
            while time.monotonic() < deadline:
                samples.append(_rss(pid))
                time.sleep(1)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=sampler))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 0
        assert len(samples) >= 5
        growth = samples[-1] - min(samples[:3])
        assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB: {samples}"
