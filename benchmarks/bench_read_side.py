"""The read side and the writer of this tree beside those of another checkout.

    git worktree add /tmp/deephys-base <commit>        # the code to compare with
    python benchmarks/bench_read_side.py --baseline /tmp/deephys-base [--images 10000]

Each tree runs in its own process on the same synthetic data (InD + 1 OOD set of
``--images`` x ``--neurons`` float16 activations, ``--classes`` classes, 2 steps,
thumbnails of 32 px), written through its own writer. Printed side by side, with
the ratio this tree / baseline: the time to write one step, ``read_log`` + the
``scores`` table, and each plugin route through TensorBoard's WSGI app over the
Python loader (first request with an empty cache, then the median of warm
requests at random neurons and images). Without ``--baseline`` only this tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_server
ROUTES = ("runs", "summary", "neuron", "image", "category", "scores_over_time", "thumbnail")


def measure(images: int, neurons: int, classes: int, requests: int) -> dict[str, float]:
    """Every figure of this process's tree, in seconds."""
    from bench_server import write_imagenet_scale_log
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from deephys_lightning.scores import score_table
    from tensorboard_plugin_deephys.deephys_plugin import DeephysPlugin

    figures = {}
    with tempfile.TemporaryDirectory() as logdir:
        seconds: list[float] = []
        write_imagenet_scale_log(
            logdir,
            images,
            neurons,
            classes,
            run="run",
            names=("ind", "ood"),
            thumbnail_px=32,
            max_activation_bytes=None,
            write_seconds=seconds,
        )
        figures["write one step"] = seconds[-1]  # the second: thumbnails unchanged
        start = time.perf_counter()
        score_table(logdir)
        figures["read_log + scores table"] = time.perf_counter() - start

        multiplexer = plugin_event_multiplexer.EventMultiplexer()
        multiplexer.AddRunsFromDirectory(logdir)
        multiplexer.Reload()
        provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
        plugin = DeephysPlugin(base_plugin.TBContext(data_provider=provider, logdir=logdir))
        client = werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider))
        rng = np.random.default_rng(1)

        def url(route: str) -> str:
            neuron, index, label = (int(rng.integers(0, n)) for n in (neurons, images, classes))
            query = {
                "runs": "",
                "summary": "run=run&layer=fc",
                "neuron": f"run=run&layer=fc&neuron={neuron}",
                "image": f"run=run&layer=fc&dataset=ood&index={index}",
                "category": f"run=run&layer=fc&dataset=ood&label={label}",
                "scores_over_time": "run=run&layer=fc&dataset=ood",
                "thumbnail": f"run=run&dataset=ood&index={index}",
            }[route]
            return f"/data/plugin/deephys/{route}?{query}"

        for route in ROUTES:
            start = time.perf_counter()
            response = client.get(url(route))
            figures[f"{route}: first"] = time.perf_counter() - start
            if response.status_code != 200:
                raise SystemExit(f"{route}: HTTP {response.status_code} {response.data[:200]!r}")
        for route in ROUTES:
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                client.get(url(route))
                times.append(time.perf_counter() - start)
            figures[f"{route}: warm p50"] = statistics.median(times)
    return figures


def run_tree(tree: str, args: argparse.Namespace) -> dict[str, float]:
    """The figures of ``tree``'s code, measured in a process of its own."""
    env = {**os.environ, "PYTHONPATH": tree}
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        *("--images", str(args.images), "--neurons", str(args.neurons)),
        *("--classes", str(args.classes), "--requests", str(args.requests)),
    ]
    out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="another checkout of this project to compare with")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.images, args.neurons, args.classes, args.requests)))
        return
    print(
        f"InD + 1 OOD set, {args.images} images x {args.neurons} neurons, {args.classes} "
        f"classes, 2 steps; routes over the Python loader, {args.requests} warm requests"
    )
    ours = run_tree(ROOT, args)
    theirs = run_tree(os.path.abspath(args.baseline), args) if args.baseline else None
    header = f"{'':28} {'this tree':>10}"
    if theirs is not None:
        header += f" {'baseline':>10} {'ratio':>6}"
    print(header)
    for name, seconds in ours.items():
        line = f"{name:28} {seconds * 1000:8.1f}ms"
        if theirs is not None:
            base = theirs[name]
            line += f" {base * 1000:8.1f}ms {seconds / base:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
