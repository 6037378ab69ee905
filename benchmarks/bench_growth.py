"""How TensorBoard's cost grows with the recorded epochs of a step-pack log.

    python benchmarks/bench_growth.py                       # modest, epochs 1 10 30 100
    python benchmarks/bench_growth.py --epochs 1 10 30      # 67 MiB of disk per epoch
    python benchmarks/bench_growth.py --quick --repeats 1   # smoke test, about a minute
    python benchmarks/bench_growth.py --events-layout       # + logs before 0.3, epochs 1 10
    python benchmarks/bench_growth.py --s3                  # modest, 1 and 10 epochs, moto S3
    python benchmarks/bench_growth.py --scale imagenet --epochs 1
    python benchmarks/bench_growth.py --json results.json --keep --work-dir /data/tmp

One record (``record_view``) is computed once from random data: InD + 3 OOD sets of
10,000 images x 512 neurons, 1 layer, 100 classes (``--scale modest``; ``imagenet``:
50,000 x 2,048, 1,000 classes; ``quick``: 2,000 x 128, 10 classes), float16
activations after a ReLU, logits and top predictions, the default detectors'
scalars, 8 x 8 thumbnails, the callback's ``max_activation_bytes`` (the full
matrices and logits are written at the modest scale, not at ImageNet's). It is then
written at every epoch, through ``EventFileSink(EventFileWriter(run))`` and
``write_view``, into a run that grows: as step packs (``layout="packs"``), beside a
run of only the scalars a record writes (accuracy, scores, detection metrics) and,
with ``--events-layout``, as logs before 0.3 held it (every array in the events).

At each epoch count and for each loader (``--load_fast=false`` and ``true``), a real
``tensorboard`` is started with its default flags (``--port 0`` and the loader
aside) on each run, ``--repeats`` times (default 3, the two runs' servers in turn;
the medians are printed, the highest peak RSS), and measured:

- bytes per epoch of the events and of the step packs (thumbnails: once);
- the time from the process start until every step is listed: the Deephys runs route
  lists them all, complete (the plugin reuses its listing for 2 s, an empty one
  included, so this is polled at 10 Hz but can move in steps of up to 2 s); for the
  scalars-only run, TensorBoard's scalars route returns every point of the InD
  accuracy; beside them, the server's start (``up s``: its URL printed) and, for the
  Deephys run, when its own accuracy scalars are all there (``events s``);
- the peak RSS (VmHWM) of the server's process tree (the Rust data server included);
- the first neuron, image and category answers after the listing, and
  ``scores_over_time`` on an OOD set without and with ``&neuron=3``: the first answer
  and the median of the next few; the runs route with its 2 s listing expired.

Targets, printed beside the figures: every step listed within 2x the scalars-only
run's time on both loaders (at 30 and 100 epochs), peak RSS within the scalars-only
run's + 300 MB, scores over time <= 200 ms, the first view answer <= 300 ms from
local disk. ``--s3`` uploads the logs to moto's S3 server (``tests/support``) and
measures ``--load_fast=false`` only (TensorBoard reads s3:// with it alone).
Logs are written under a temporary folder (``--work-dir``), removed at the end
unless ``--keep``; the free space is checked before each growth.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import requests

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support")
)
from tensorboard_process import launched  # noqa: E402

from deephys_lightning.writing import RecordView  # noqa: E402

LAYER = "fc"
SETS = ("ind", "ood1", "ood2", "ood3")
STEPS_PER_EPOCH = 100
POLL_S = 0.1
REPEATS = 5
LISTING_TTL_S = 2.0  # records.INDEX_TTL_SECONDS: the runs route reuses its listing
PREFIX = "/data/plugin/deephys"
MIB = 2**20
# Targets.
LISTED_RATIO = 2.0
RSS_EXTRA_MB = 300
SCORES_MS = 200
FIRST_VIEW_MS = 300


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    images: int
    neurons: int
    classes: int
    epochs: tuple[int, ...]


SCALES = {
    "quick": Scale("quick", 2_000, 128, 10, (1, 3)),
    "modest": Scale("modest", 10_000, 512, 100, (1, 10, 30, 100)),
    "imagenet": Scale("imagenet", 50_000, 2_048, 1_000, (1, 10)),
}


# -- the record --------------------------------------------------------------------


def make_view(scale: Scale, seed: int = 0) -> RecordView:
    """One record of random data, computed as the callback computes it."""
    import torch

    from deephys_lightning import detection
    from deephys_lightning.callback import DEFAULT_MAX_ACTIVATION_BYTES
    from deephys_lightning.recording import capture
    from deephys_lightning.recording.plan import writes_matrix
    from deephys_lightning.writing import DatasetRecording, record_view
    from tensorboard_plugin_deephys.log.metadata import TOP_PREDICTIONS, Record

    rng = np.random.default_rng(seed)
    n, m, c = scale.images, scale.neurons, scale.classes
    keeps_logits = writes_matrix(n, m, DEFAULT_MAX_ACTIVATION_BYTES)
    recordings = {}
    for shift, name in enumerate(SETS):
        labels = rng.integers(0, c, n)
        logits = rng.standard_normal((n, c), dtype=np.float32)
        correct = np.flatnonzero(rng.random(n) < 0.7 - 0.1 * shift)
        logits[correct, labels[correct]] += 5.0
        acts = rng.standard_normal((n, m), dtype=np.float32) * (1 + 0.1 * shift) - 0.2 * shift
        top_classes, top_probabilities = capture.top_predictions(
            torch.from_numpy(logits), TOP_PREDICTIONS
        )
        recordings[name] = DatasetRecording(
            labels=labels,
            predictions=logits.argmax(axis=1),
            activations={LAYER: np.maximum(acts, 0).astype(np.float16)},
            thumbnails=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
            logits=logits if keeps_logits else None,
            logit_scores=detection.logit_scores(torch.from_numpy(logits)).numpy(),
            top_classes=top_classes.numpy(),
            top_probabilities=top_probabilities.numpy(),
        )
    record = Record(
        step=0,
        epoch=0,
        layers=(LAYER,),
        datasets=SETS,
        class_names=tuple(f"class {i}" for i in range(c)),
        num_images={name: n for name in SETS},
        top_k=32,
    )
    return record_view(
        record,
        recordings,
        max_activation_bytes=DEFAULT_MAX_ACTIVATION_BYTES,
        detectors=detection.DEFAULT_DETECTORS,
    )


def view_bytes(view: RecordView) -> int:
    """The bytes of a record's arrays: about what a step pack holds."""
    arrays = [a for d in (*view.datasets.values(), *view.layers.values()) for a in d.values()]
    return sum(int(np.asarray(a).nbytes) for a in arrays)


def step_of(epoch: int) -> int:
    return STEPS_PER_EPOCH * (epoch + 1) - 1


def view_at(view: RecordView, epoch: int) -> RecordView:
    """``view`` at ``epoch``'s step; thumbnails only at the first (as the callback)."""
    record = dataclasses.replace(view.record, step=step_of(epoch), epoch=epoch)
    thumbnails = view.thumbnails if epoch == 0 else {}
    return dataclasses.replace(view, record=record, thumbnails=thumbnails)


def write_scalars(sink: Any, view: RecordView) -> None:
    """Only the scalars ``write_view`` writes (accuracy, scores, detection metrics), in
    one event, as its record sink merges them."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    from tensorboard_plugin_deephys.log.metadata import (
        DETECTION_METRICS,
        detection_tag,
        scalar_tag,
    )

    record = view.record
    values: list[tuple[str, float]] = [
        (scalar_tag("accuracy", dataset=name), view.accuracy[name]) for name in view.accuracy
    ]
    for (layer, ood), scores in view.scores.items():
        values += [
            (scalar_tag(k, layer=layer, dataset=ood), v) for k, v in scores.summary().items()
        ]
    for ood, rows in view.detections.items():
        for row in rows:
            for metric in DETECTION_METRICS:
                tag = detection_tag(row.detector, metric, dataset=ood, layer=row.layer)
                values.append((tag, getattr(row, metric)))
    summary = summary_pb2.Summary()
    for tag, value in values:
        summary.value.extend(scalar_pb(tag, value).value)
    sink.add_summary(summary, record.step)
    sink.flush()


class GrowingRun:
    """A run directory (``<logdir>/run``) that grows by whole epochs: step packs
    (``"packs"``), every array in the events (``"events"``), or scalars only."""

    def __init__(self, logdir: str, view: RecordView, layout: str) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        from deephys_lightning.writing import EventFileSink

        self.logdir = logdir
        self.run_dir = os.path.join(logdir, "run")
        os.makedirs(self.run_dir)
        self.layout = layout
        self.epochs = 0
        self.write_s = 0.0
        self._view = view
        self._sink = EventFileSink(EventFileWriter(self.run_dir))

    def grow_to(self, epochs: int) -> None:
        from deephys_lightning.writing import write_view

        start = time.perf_counter()
        for epoch in range(self.epochs, epochs):
            view = view_at(self._view, epoch)
            if self.layout == "scalars":
                write_scalars(self._sink, view)
            else:
                write_view(self._sink, view, log_dir=self.run_dir, layout=self.layout)
        self.write_s += time.perf_counter() - start
        self.epochs = max(self.epochs, epochs)

    @property
    def steps(self) -> list[int]:
        return [step_of(e) for e in range(self.epochs)]

    def close(self) -> None:
        self._sink.close()


def run_bytes(run_dir: str) -> dict[str, int]:
    """Bytes of the events, the step packs, the thumbnails and anything else."""
    found = {"events": 0, "packs": 0, "thumbnails": 0, "other": 0}
    for folder, _, files in os.walk(run_dir):
        relative = os.path.relpath(folder, run_dir).replace(os.sep, "/")
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            if name.startswith("events.out.tfevents"):
                found["events"] += size
            elif relative.startswith("plugins/deephys/steps"):
                found["packs"] += size
            elif relative.startswith("plugins/deephys/thumbnails"):
                found["thumbnails"] += size
            else:
                found["other"] += size
    return found


def check_disk(folder: str, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + 2 * 2**30:
        raise SystemExit(
            f"not enough disk under {folder}: {needed / 2**30:.1f} GiB needed (+2 GiB "
            f"spare), {free / 2**30:.1f} GiB free; use --work-dir or fewer --epochs"
        )


# -- a real tensorboard ------------------------------------------------------------


@dataclasses.dataclass
class Server:
    process: subprocess.Popen
    started: float  # time.perf_counter() just before the process started
    base: str
    lines: list[str]


@contextlib.contextmanager
def tensorboard(logdir: str, load_fast: bool, timeout: float) -> Iterator[Server]:
    """A ``tensorboard`` with its default flags (but ``--port 0`` and the loader) on
    127.0.0.1, stopped by its own PID."""
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        f"--load_fast={'true' if load_fast else 'false'}",
    ]
    started = time.perf_counter()
    with launched(command, timeout) as (process, base, lines):
        yield Server(process, started, base, lines)


def wait_until(
    server: Server, conditions: dict[str, Callable[[requests.Session], bool]], timeout: float
) -> dict[str, float]:
    """Seconds from the server's start until each of ``conditions`` (polled in turn at
    10 Hz) holds."""
    deadline = time.monotonic() + timeout
    times: dict[str, float] = {}
    with requests.Session() as session:
        while True:
            for name, ready in conditions.items():
                if name in times:
                    continue
                with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                    if ready(session):
                        times[name] = time.perf_counter() - server.started
            if len(times) == len(conditions):
                return times
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"tensorboard never met {sorted(set(conditions) - set(times))}:\n"
                    + "".join(server.lines[-30:])
                )
            time.sleep(POLL_S)


def deephys_listed(base: str, steps: list[int]) -> Callable[[requests.Session], bool]:
    """The runs route lists every one of ``steps`` of run ``run``, none missing data."""

    def ready(session: requests.Session) -> bool:
        response = session.get(f"{base}{PREFIX}/runs", timeout=120)
        if response.status_code != 200:
            return False
        for entry in response.json()["runs"]:
            if entry["run"] == "run":
                return [s["step"] for s in entry["steps"] if not s["missing"]] == steps
        return False

    return ready


def scalars_listed(base: str, tag: str, count: int) -> Callable[[requests.Session], bool]:
    """TensorBoard's scalars route returns ``count`` points of ``tag`` in run ``run``."""

    def ready(session: requests.Session) -> bool:
        url = f"{base}/data/plugin/scalars/scalars"
        response = session.get(url, params={"run": "run", "tag": tag}, timeout=120)
        return response.status_code == 200 and len(response.json()) == count

    return ready


def tree_peak_rss(pid: int) -> int:
    """The sum of VmHWM over ``pid`` and its descendants (the Rust data server)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                path = f"/proc/{current}/task/{task}/children"
                with contextlib.suppress(OSError), open(path) as children:  # a thread ended
                    pending += [int(c) for c in children.read().split()]
        with contextlib.suppress(OSError), open(f"/proc/{current}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


def timed_get(session: requests.Session, url: str) -> float:
    """Seconds of one GET, which must answer 200."""
    start = time.perf_counter()
    response = session.get(url, timeout=300)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed


def first_and_median(session: requests.Session, urls: list[str]) -> tuple[float, float]:
    """The first URL's time, and the median of the others' (ms)."""
    times = [timed_get(session, url) * 1000 for url in urls]
    return times[0], statistics.median(times[1:])


def view_latencies(base: str, scale: Scale) -> dict[str, float]:
    """First answers of the views after the listing, then warm medians (ms)."""
    rng = random.Random(0)
    q = f"{base}{PREFIX}"
    ood = SETS[1]

    def neuron() -> str:
        return f"{q}/neuron?run=run&layer={LAYER}&neuron={rng.randrange(scale.neurons)}"

    def image() -> str:
        dataset, index = rng.choice(SETS), rng.randrange(scale.images)
        return f"{q}/image?run=run&layer={LAYER}&dataset={dataset}&index={index}"

    def category() -> str:
        dataset, label = rng.choice(SETS), rng.randrange(scale.classes)
        return f"{q}/category?run=run&layer={LAYER}&dataset={dataset}&label={label}"

    scores = f"{q}/scores_over_time?run=run&layer={LAYER}&dataset={ood}"
    figures: dict[str, float] = {}
    with requests.Session() as session:
        for name, make in (("neuron", neuron), ("image", image), ("category", category)):
            first, median = first_and_median(session, [make() for _ in range(REPEATS + 1)])
            figures[f"{name}_first_ms"], figures[f"{name}_median_ms"] = first, median
        for name, url in (("scores", scores), ("scores_n3", f"{scores}&neuron=3")):
            first, median = first_and_median(session, [url] * (REPEATS + 1))
            figures[f"{name}_first_ms"], figures[f"{name}_median_ms"] = first, median
        runs = []
        for _ in range(3):  # the plugin's listing expired each time
            time.sleep(LISTING_TTL_S + 0.1)
            runs.append(timed_get(session, f"{q}/runs") * 1000)
        figures["runs_uncached_ms"] = statistics.median(runs)
    return figures


def accuracy_tag() -> str:
    from tensorboard_plugin_deephys.log.metadata import scalar_tag

    return scalar_tag("accuracy", dataset=SETS[0])


def measure_deephys(
    logdir: str, steps: list[int], load_fast: bool, scale: Scale, timeout: float
) -> dict[str, float]:
    """``listed_s``: the Deephys runs route lists every step; ``events_s``: TensorBoard's
    scalars route has every point of the same run's InD accuracy (its events loaded)."""
    with tensorboard(logdir, load_fast, timeout) as server:
        up = time.perf_counter() - server.started
        conditions = {
            "listed_s": deephys_listed(server.base, steps),
            "events_s": scalars_listed(server.base, accuracy_tag(), len(steps)),
        }
        figures = {"up_s": up, **wait_until(server, conditions, timeout)}
        figures.update(view_latencies(server.base, scale))
        figures["peak_rss_mb"] = tree_peak_rss(server.process.pid) / 1e6
    return figures


def measure_scalars(logdir: str, count: int, load_fast: bool, timeout: float) -> dict[str, float]:
    with tensorboard(logdir, load_fast, timeout) as server:
        up = time.perf_counter() - server.started
        listed = scalars_listed(server.base, accuracy_tag(), count)
        figures = {"up_s": up, **wait_until(server, {"listed_s": listed}, timeout)}
        figures["peak_rss_mb"] = tree_peak_rss(server.process.pid) / 1e6
    return figures


# -- the benchmark -----------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    scale: Scale
    epochs: list[int]
    loaders: list[bool]
    events_epochs: list[int]  # the epoch counts measured for the events layout too
    s3: bool
    timeout: float
    repeats: int


def bytes_row(run: GrowingRun, where: str) -> dict[str, Any]:
    sizes = run_bytes(run.run_dir)
    return {
        "layout": run.layout,
        "epochs": run.epochs,
        "where": where,
        "events_mib_per_epoch": sizes["events"] / MIB / run.epochs,
        "packs_mib_per_epoch": sizes["packs"] / MIB / run.epochs,
        "thumbnails_mib": sizes["thumbnails"] / MIB,
        "total_mib": sum(sizes.values()) / MIB,
        "write_s_per_epoch": run.write_s / run.epochs,
    }


def print_bytes(row: dict[str, Any]) -> None:
    print(
        f"  {row['layout']:8s} {row['epochs']:4d} epochs: events "
        f"{row['events_mib_per_epoch']:8.3f} MiB/epoch, step packs "
        f"{row['packs_mib_per_epoch']:7.2f} MiB/epoch, thumbnails {row['thumbnails_mib']:6.2f} "
        f"MiB once, total {row['total_mib']:9.1f} MiB; written in "
        f"{row['write_s_per_epoch']:5.2f} s/epoch",
        flush=True,
    )


HEADER = (
    "layout  epochs loader where | up s events s | listed s: deephys / scalars = ratio"
    " | peak RSS MB: deephys / scalars = extra | first ms: neuron image category | runs ms"
    " | scores ms first/med | neuron=3 first/med | targets"
)


def verdicts(row: dict[str, Any], local: bool) -> str:
    """The targets met (ok) or missed (MISS), in the order of the columns."""
    d = row["deephys"]
    first = max(d["neuron_first_ms"], d["image_first_ms"], d["category_first_ms"])
    scores = max(d["scores_first_ms"], d["scores_n3_first_ms"])
    checks = [
        ("listed", row["listed_ratio"] <= LISTED_RATIO),
        ("rss", row["rss_extra_mb"] <= RSS_EXTRA_MB),
        ("first", first <= FIRST_VIEW_MS or not local),
        ("scores", scores <= SCORES_MS),
    ]
    return " ".join(f"{name} {'ok' if good else 'MISS'}" for name, good in checks)


def format_row(row: dict[str, Any]) -> str:
    d, s = row["deephys"], row["scalars"]
    return (
        f"{row['layout']:7s} {row['epochs']:6d} {row['loader']:6s} {row['where']:5s} |"
        f" {d['up_s']:4.2f} {d['events_s']:8.2f} |"
        f" {d['listed_s']:7.2f} / {s['listed_s']:6.2f} = {row['listed_ratio']:5.2f}x |"
        f" {d['peak_rss_mb']:6.0f} / {s['peak_rss_mb']:6.0f} = {row['rss_extra_mb']:+5.0f} |"
        f" {d['neuron_first_ms']:6.1f} {d['image_first_ms']:6.1f} {d['category_first_ms']:6.1f} |"
        f" {d['runs_uncached_ms']:6.1f} |"
        f" {d['scores_first_ms']:6.1f} / {d['scores_median_ms']:6.1f} |"
        f" {d['scores_n3_first_ms']:6.1f} / {d['scores_n3_median_ms']:6.1f} |"
        f" {row['verdicts']}"
    )


def combine(runs: list[dict[str, float]]) -> dict[str, float]:
    """Figures of several servers: the median of each, the highest peak RSS."""
    return {
        key: max(r[key] for r in runs)
        if key == "peak_rss_mb"
        else statistics.median(r[key] for r in runs)
        for key in runs[0]
    }


def measure_pair(
    plan: Plan, layout: str, logdirs: dict[str, str], steps: list[int], load_fast: bool, where: str
) -> dict[str, Any]:
    """One row: the ``layout`` run beside the scalars-only run, one loader, each server
    started ``plan.repeats`` times, interleaved."""
    deephys_runs, scalars_runs = [], []
    for _ in range(plan.repeats):
        deephys_runs.append(
            measure_deephys(logdirs[layout], steps, load_fast, plan.scale, plan.timeout)
        )
        scalars_runs.append(
            measure_scalars(logdirs["scalars"], len(steps), load_fast, plan.timeout)
        )
    deephys, scalars = combine(deephys_runs), combine(scalars_runs)
    row: dict[str, Any] = {
        "layout": layout,
        "epochs": len(steps),
        "loader": str(load_fast).lower(),
        "where": where,
        "deephys": deephys,
        "scalars": scalars,
        "listed_ratio": deephys["listed_s"] / scalars["listed_s"],
        "rss_extra_mb": deephys["peak_rss_mb"] - scalars["peak_rss_mb"],
        "servers": {"deephys": deephys_runs, "scalars": scalars_runs},
    }
    row["verdicts"] = verdicts(row, where == "local")
    print(format_row(row), flush=True)
    return row


def run_plan(plan: Plan, work: str, view: RecordView) -> dict[str, list[dict[str, Any]]]:
    layouts = ["packs", "scalars"] + (["events"] if plan.events_epochs else [])
    runs = {layout: GrowingRun(os.path.join(work, layout), view, layout) for layout in layouts}
    per_epoch = view_bytes(view)
    results: dict[str, list[dict[str, Any]]] = {"bytes": [], "rows": []}
    s3 = contextlib.ExitStack()
    try:
        upload = s3.enter_context(s3_store()) if plan.s3 else None
        for epochs in plan.epochs:
            growing = [
                r for r in runs.values() if r.layout != "events" or epochs in plan.events_epochs
            ]
            copies = sum(r.layout != "scalars" for r in growing)
            check_disk(work, per_epoch * copies * max(0, epochs - runs["packs"].epochs))
            for run in growing:
                run.grow_to(epochs)
                row = bytes_row(run, "local")
                results["bytes"].append(row)
                print_bytes(row)
            logdirs = {r.layout: r.logdir for r in growing}
            where = "local"
            if upload is not None:
                logdirs = {layout: upload(logdir, epochs) for layout, logdir in logdirs.items()}
                where = "s3"
            print(HEADER, flush=True)
            for layout in [r.layout for r in growing if r.layout != "scalars"]:
                for load_fast in plan.loaders:
                    row = measure_pair(plan, layout, logdirs, runs[layout].steps, load_fast, where)
                    results["rows"].append(row)
    finally:
        s3.close()
        for run in runs.values():
            run.close()
    return results


@contextlib.contextmanager
def s3_store() -> Iterator[Callable[[str, int], str]]:
    """A moto S3 server and a bucket; yields ``upload(logdir, epochs) -> s3 URL``."""
    from s3_server import new_bucket, running_s3_server

    from tensorboard_plugin_deephys.log import storage

    with running_s3_server():
        bucket = new_bucket()
        filesystem = storage.filesystem("s3://x")[0]

        def upload(logdir: str, epochs: int) -> str:
            prefix = f"{bucket}/{epochs}-epochs/{os.path.basename(logdir)}"
            start = time.perf_counter()
            filesystem.put(os.path.join(logdir, "run"), f"{prefix}/run", recursive=True)
            print(
                f"  uploaded {os.path.basename(logdir)} ({epochs} epochs) to s3://{prefix} in "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
            return f"s3://{prefix}"

        yield upload


def print_summary(rows: list[dict[str, Any]]) -> None:
    print(
        f"\ntargets: listed <= {LISTED_RATIO:g}x the scalars-only run (at 30 and 100 epochs),"
        f" peak RSS <= scalars-only + {RSS_EXTRA_MB} MB, first view answer <= "
        f"{FIRST_VIEW_MS} ms (local disk), scores over time <= {SCORES_MS} ms (first answers)"
    )
    print(HEADER)
    for row in rows:
        print(format_row(row))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="modest")
    parser.add_argument("--quick", action="store_true", help="--scale quick (a smoke test)")
    parser.add_argument("--epochs", type=int, nargs="+", help="epoch counts (default: the scale's)")
    parser.add_argument(
        "--loaders", nargs="+", choices=["false", "true"], default=["false", "true"]
    )
    parser.add_argument(
        "--events-layout",
        action="store_true",
        help="also the layout before 0.3 (every array in the events)",
    )
    parser.add_argument("--events-layout-epochs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--s3", action="store_true", help="from moto's S3 server (load_fast=false)")
    parser.add_argument("--work-dir", help="where the logs are written (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--json", help="write the results there")
    parser.add_argument("--timeout", type=float, default=900.0, help="per server, seconds")
    parser.add_argument(
        "--repeats", type=int, default=3, help="servers started per row (medians; default 3)"
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    scale = SCALES["quick" if args.quick else args.scale]
    default_epochs = (1, 10) if args.s3 and not args.quick else scale.epochs
    epochs = sorted(set(args.epochs or default_epochs))
    events_epochs = (
        sorted(set(args.events_layout_epochs) & set(epochs)) if args.events_layout else []
    )
    loaders = ["false"] if args.s3 else args.loaders
    return Plan(
        scale,
        epochs,
        [x == "true" for x in loaders],
        events_epochs,
        args.s3,
        args.timeout,
        max(1, args.repeats),
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = make_plan(args)
    warnings.filterwarnings("ignore")
    from deephys_lightning import fast_crc

    fast_crc.install()  # the writer's CRCs at C speed (as the callback's)
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_growth-", dir=args.work_dir)
    scale = plan.scale
    try:
        start = time.perf_counter()
        view = make_view(scale)
        print(
            f"scale {scale.name}: {len(SETS)} sets x {scale.images:,} images x "
            f"{scale.neurons:,} neurons, 1 layer, {scale.classes:,} classes; record computed in "
            f"{time.perf_counter() - start:.1f} s, {view_bytes(view) / MIB:.1f} MiB of arrays; "
            f"epochs {plan.epochs}, loaders {args.loaders if not plan.s3 else ['false']}, "
            f"{'moto S3' if plan.s3 else 'local disk'}; logs under {work}",
            flush=True,
        )
        results = run_plan(plan, work, view)
        print_summary(results["rows"])
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"scale": dataclasses.asdict(scale), **results}, out, indent=1)
    finally:
        if args.keep:
            print(f"logs kept under {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
