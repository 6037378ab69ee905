"""The Deephys plugin under a real tensorboard, on a synthetic ImageNet-scale log.

    python benchmarks/bench_server.py [--images 50000] [--load-fast true false] [--requests 100]
    python benchmarks/bench_server.py --many-classes [--classes 21841] [--images 50000]

Writes, through the real writer, InD + 3 OOD sets of 50,000 images x 2,048 neurons
with 1,000 classes at 2 steps (thumbnails of 64 px as asset files, no full
activation matrix: the callback's defaults), then for each loader starts
``tensorboard --port 0`` on it and prints: the time until the log is loaded, the
time to the tab's first data after that (runs, then a neuron), the first summary and
category_sets answers, p50/p95 of runs, summary, confusion (a page of a set's most
confused pairs), neuron, image, category, category across every set
(``category_sets``: one class in the four sets side by side, with what each OOD set
keeps of the InD top neurons), confusion set (a category with ``pred``) and thumbnail
requests after warm-up (the neuron answer with its top categories and whether it
fires, the image's top predictions, the category's false positives and negatives: all
the tab asks; the slowest request too, a set's first being the one that ranks its
category means), the size of the summary answer, and the peak RSS of the server (with
the Rust data server process, when used). The layer feeds a linear head, so the image
answers hold what pushed each prediction, the neuron answers what zeroing it does and
the confusion sets their top mean contributions (issue 30). The same figures for the
demo's log.
Targets: first data <= 3 s, p95 <= 150 ms, peak RSS <= 2.5 GB.

``--many-classes``: the same log with ImageNet-21k's 21,841 classes (issue 31), and
no demo log. Targets: p95 <= 150 ms for every route, peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))
from tensorboard_process import running_tensorboard  # noqa: E402


def write_imagenet_scale_log(
    logdir: str,
    images: int,
    neurons: int,
    classes: int,
    *,
    run: str = "imagenet",
    names: tuple[str, ...] = ("imagenet", "v2", "sketch", "style"),
    thumbnail_px: int = 64,
    max_activation_bytes: int | None = 32 * 2**20,
    write_seconds: list[float] | None = None,
) -> str:
    """Write two steps of synthetic data into ``logdir/run`` through the real writer
    (thumbnails at the first step only); return ``run``. ``write_seconds`` gets the
    time of each step's ``write_record``."""
    import torch
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning import detection, fast_crc
    from deephys_lightning.head_detectors import LinearHead
    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log.metadata import Record

    fast_crc.install()
    run_dir = os.path.join(logdir, run)
    os.makedirs(run_dir)
    sink = EventFileSink(EventFileWriter(run_dir))
    rng = np.random.default_rng(0)
    # a linear head on "fc": the contributions (what pushed each prediction) are written
    # and served too; the recorded max_logit scores are the head's, so it checks out
    head = LinearHead(rng.normal(scale=0.02, size=(classes, neurons)), np.zeros(classes))
    for step in (1000, 2000):
        recordings = {}
        for name in names:
            labels = rng.integers(0, classes, images)
            correct = rng.random(images) < 0.7
            acts = np.maximum(rng.standard_normal((images, neurons), dtype=np.float32), 0)
            acts = acts.astype(np.float16)
            scores = np.concatenate(
                [
                    detection.logit_scores(head.logits(acts[i : i + 4096])).numpy()
                    for i in range(0, images, 4096)
                ]
            )
            recordings[name] = DatasetRecording(
                labels=labels,
                predictions=np.where(correct, labels, rng.integers(0, classes, images)),
                activations={"fc": acts},
                logit_scores=scores,
                thumbnails=rng.integers(
                    0, 256, (images, thumbnail_px, thumbnail_px, 3), dtype=np.uint8
                )
                if step == 1000
                else None,
            )
        record = Record(
            step=step,
            epoch=step // 1000 - 1,
            layers=("fc",),
            datasets=names,
            class_names=tuple(f"class {i}" for i in range(classes)),
            num_images={name: images for name in names},
            top_k=32,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            write_record(
                sink,
                record,
                recordings,
                log_dir=run_dir,
                max_activation_bytes=max_activation_bytes,
                heads={"head": head},
            )
        if write_seconds is not None:
            write_seconds.append(time.perf_counter() - start)
        del recordings
    sink.close()
    return run


def _peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` and of its descendants (the Rust data server), whichever of
    their threads started them."""
    total = 0
    pids, seen = [pid], set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as children:
                    pids += [int(c) for c in children.read().split()]
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _timed_get(session, url):
    start = time.perf_counter()
    response = session.get(url, timeout=120)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed, response


def measure(title: str, logdir: str, run: str, load_fast: bool, n: int, datasets, layer: str):
    start = time.perf_counter()
    with running_tensorboard(logdir, load_fast=load_fast, timeout=900) as base:
        loaded = time.perf_counter() - start
        prefix = f"{base}/data/plugin/deephys"
        rng = random.Random(0)
        with requests.Session() as session:
            first_start = time.perf_counter()
            _timed_get(session, f"{prefix}/runs")
            _timed_get(session, f"{prefix}/neuron?run={run}&layer={layer}&neuron=0&k=12")
            first = time.perf_counter() - first_start
            summary_s, summary = _timed_get(session, f"{prefix}/summary?run={run}&layer={layer}")
            num_neurons = summary.json()["num_neurons"]
            num_images = {d["name"]: d["num_images"] for d in summary.json()["datasets"]}
            num_classes = len(summary.json()["class_names"])
            confused_pairs = {d["name"]: d["confused_pairs"] for d in summary.json()["datasets"]}
            top_confusions = {d["name"]: d["top_confusions"] for d in summary.json()["datasets"]}
            # the first category across the sets: it ranks the InD means and reads each
            # set's means once (later ones read rows of the tables made then)
            sets_s, _ = _timed_get(session, f"{prefix}/category_sets?run={run}&layer={layer}")

            def neuron():
                return f"neuron?run={run}&layer={layer}&neuron={rng.randrange(num_neurons)}&k=12"

            def image():
                d = rng.choice(datasets)
                index = rng.randrange(num_images[d])
                return f"image?run={run}&layer={layer}&dataset={d}&index={index}"

            def category():
                d = rng.choice(datasets)
                label = rng.randrange(num_classes)
                return f"category?run={run}&layer={layer}&dataset={d}&label={label}"

            def category_sets():
                label = rng.randrange(num_classes)
                return f"category_sets?run={run}&layer={layer}&label={label}"

            def runs():
                return "runs"

            def overview():
                return f"summary?run={run}&layer={layer}"

            def confusion():
                d = rng.choice(datasets)
                page = rng.randrange(max(1, -(-confused_pairs[d] // 100)))
                return f"confusion?run={run}&dataset={d}&diagonal=0&page={page}"

            def pair():
                d = rng.choice([d for d in datasets if top_confusions[d]] or datasets)
                cell = rng.choice(top_confusions[d] or [{"label": 0, "pred": 0}])
                where = f"run={run}&layer={layer}&dataset={d}"
                return f"category?{where}&label={cell['label']}&pred={cell['pred']}"

            def thumbnail():
                d = rng.choice(datasets)
                return f"thumbnail?run={run}&dataset={d}&index={rng.randrange(num_images[d])}"

            print(f"\n{title}, load_fast={str(load_fast).lower()}:")
            print(f"  log loaded after server start     {loaded:8.2f} s")
            print(f"  first data (runs + neuron)        {first * 1000:8.1f} ms")
            print(f"  summary route (first call)        {summary_s * 1000:8.1f} ms")
            print(f"  category_sets route (first call)  {sets_s * 1000:8.1f} ms")
            print(
                f"  summary answer                    {len(summary.content) / 2**10:8.1f} KiB "
                f"({num_classes:,} classes)"
            )
            for name, make in (
                ("runs", runs),
                ("summary", overview),
                ("confusion", confusion),
                ("neuron", neuron),
                ("image", image),
                ("category", category),
                ("cat. sets", category_sets),
                ("pair", pair),
                ("thumbnail", thumbnail),
            ):
                for _ in range(5):  # warm-up
                    _timed_get(session, f"{prefix}/{make()}")
                times = sorted(_timed_get(session, f"{prefix}/{make()}")[0] for _ in range(n))
                p50 = statistics.median(times)
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                print(
                    f"  {name:10s} p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
                    f"max {times[-1] * 1000:7.1f} ms"
                )
        peak = _peak_rss(running_tensorboard.pid)
        print(f"  peak RSS of the server            {peak / 2**20:8.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument(
        "--classes", type=int, default=None, help="default 1,000 (21,841 with --many-classes)"
    )
    parser.add_argument(
        "--many-classes",
        action="store_true",
        help="ImageNet-21k's 21,841 classes (issue 31): targets p95 <= 150 ms, peak RSS <= 1 GB",
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--load-fast", nargs="*", default=["true", "false"])
    args = parser.parse_args()
    if args.classes is None:
        args.classes = 21_841 if args.many_classes else 1000
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        run = write_imagenet_scale_log(logdir, args.images, args.neurons, args.classes)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(logdir) for f in fs)
        print(
            f"synthetic log: 4 sets x {args.images:,} images x {args.neurons:,} neurons, "
            f"{args.classes:,} classes, 2 steps: {size / 2**20:.0f} MiB on disk "
            f"(thumbnails included), written in {time.perf_counter() - start:.0f} s"
        )
        for load_fast in args.load_fast:
            measure(
                f"ImageNet scale, {args.classes:,} classes",
                logdir,
                run,
                load_fast == "true",
                args.requests,
                ["imagenet", "v2", "sketch", "style"],
                "fc",
            )
    if args.many_classes:
        return
    from deephys_lightning.demo.cli import train_demo

    with tempfile.TemporaryDirectory() as logdir:
        run_dir = train_demo(logdir, epochs=3, quiet=True)
        run = os.path.relpath(run_dir, logdir)
        for load_fast in args.load_fast:
            measure(
                "demo log",
                logdir,
                run,
                load_fast == "true",
                args.requests,
                ["colored", "permuted", "arbitrary", "drifted"],
                "backbone.fc1",
            )


if __name__ == "__main__":
    main()
