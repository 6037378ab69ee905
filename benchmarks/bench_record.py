"""The record's computation at ImageNet scale beside one read of its data (issue 27).

    python benchmarks/bench_record.py [--images 50000] [--neurons 2048] [--classes 1000]
                                      [--sets 4] [--repeats 2] [--device cpu|cuda]

InD + 3 OOD sets of float16 activations (ReLU of a normal), random labels and
predictions (about 48,000 confusion pairs a set: the confusion sets' worst case),
each image's logit scores, top 5 classes and finiteness statuses (as the callback
records them): ``view_data.record_view``, everything a record holds before it is written
(top and bottom images, distributions, per-image top neurons, category means,
confusion sets, scores, the logit detectors and calibration), timed beside one read
of the same matrices (a float32-accumulated sum, in blocks), repeats interleaved.
The ratio is the figure: the target is at most 3x on the CPU. ``--device cuda``
computes on the GPU (the matrices placed there first, as the callback's gathered
rows are) and prints the whole computation's time (target <= 1 s).
Then where the time goes: the heavy kernels, each timed once.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deephys_lightning import metrics
from deephys_lightning.writing.view_data import DatasetRecording, record_view
from tensorboard_plugin_deephys.log.metadata import TOP_PREDICTIONS, Record

NAMES = ("imagenet", "v2", "sketch", "style", "a", "r", "c", "o")


def _recordings(images: int, neurons: int, classes: int, sets: int, device: str):
    rng = np.random.default_rng(0)
    recordings = {}
    for name in NAMES[:sets]:
        acts = torch.from_numpy(
            np.maximum(rng.standard_normal((images, neurons), dtype=np.float32), 0).astype(
                np.float16
            )
        ).to(device)
        top_classes = rng.integers(0, classes, (images, TOP_PREDICTIONS), dtype=np.int32)
        probabilities = -np.sort(-rng.random((images, TOP_PREDICTIONS), dtype=np.float32))
        scores = rng.normal(size=(images, 4)).astype(np.float32)
        recordings[name] = DatasetRecording(
            labels=rng.integers(0, classes, images),
            predictions=top_classes[:, 0].astype(np.int64),
            activations={"fc": acts},
            logit_scores=scores,
            top_classes=top_classes,
            top_probabilities=probabilities,
            # the statuses the callback records on the device, with the rows
            left_out=np.zeros(images, np.uint8),
            layer_left_out={"fc": np.zeros(images, np.uint8)},
        )
    record = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=tuple(recordings),
        class_names=tuple(map(str, range(classes))),
        num_images={name: images for name in recordings},
        top_k=32,
    )
    return record, recordings


def _read(recordings) -> float:
    """One read of every matrix: a float32-accumulated sum, in blocks."""
    total = 0.0
    for rec in recordings.values():
        rows = rec.activations["fc"]
        total += float(sum(rows[i : i + 4096].float().sum() for i in range(0, len(rows), 4096)))
    return total


def _numpy_read(recordings) -> float:
    """The issue's reference: NumPy's float32-accumulated sum of every matrix."""
    return float(
        sum(
            np.sum(rec.activations["fc"].cpu().numpy(), dtype=np.float32)
            for rec in recordings.values()
        )
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _kernels(record, recordings) -> dict[str, float]:
    """Seconds per heavy kernel over one whole record (each wrapped, then one run)."""
    names = (
        "dataset_statistics",
        "top_k",
        "neuron_distributions",
        "top_neurons",
        "confusion_sets_top_neurons",
        "histogram_range",
    )
    spent = dict.fromkeys(names, 0.0)
    originals = {name: getattr(metrics, name) for name in names}

    def wrap(name):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return run

    for name in names:
        setattr(metrics, name, wrap(name))
    try:
        start = time.perf_counter()
        record_view(record, recordings, max_activation_bytes=0, detectors=("msp", "energy"))
        spent["whole record"] = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(metrics, name, function)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--sets", type=int, default=4, choices=range(2, len(NAMES) + 1))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    record, recordings = _recordings(
        args.images, args.neurons, args.classes, args.sets, args.device
    )
    data = sum(r.activations["fc"].numel() * 2 for r in recordings.values())
    print(
        f"{args.sets} sets of {args.images:,} x {args.neurons:,} float16 ({data / 2**20:.0f} MiB) "
        f"on {args.device}, {args.classes:,} classes, torch threads {torch.get_num_threads()}; "
        f"best of {args.repeats}, interleaved"
    )
    times: dict[str, list[float]] = {"read": [], "numpy read": [], "record": []}
    for _ in range(args.repeats):
        if not args.device.startswith("cuda"):
            start = time.perf_counter()
            _numpy_read(recordings)
            times["numpy read"].append(time.perf_counter() - start)
        _sync(args.device)
        start = time.perf_counter()
        _read(recordings)
        _sync(args.device)
        times["read"].append(time.perf_counter() - start)
        start = time.perf_counter()
        record_view(record, recordings, max_activation_bytes=0, detectors=("msp", "energy"))
        _sync(args.device)
        times["record"].append(time.perf_counter() - start)
    read, computed = min(times["read"]), min(times["record"])
    print(f"  one read of the matrices (torch, float32 sums)   {read:8.3f} s")
    if times["numpy read"]:
        numpy_read = min(times["numpy read"])
        print(f"  one read, NumPy float32-accumulated sum          {numpy_read:8.3f} s")
    gpu_target = " (target <= 1 s on a GPU)" if args.device.startswith("cuda") else ""
    print(
        f"  the record's computation                         {computed:8.3f} s  "
        f"{computed / read:6.1f}x the torch read{gpu_target}"
    )
    if times["numpy read"]:
        print(f"{'':51}{computed / numpy_read:6.1f}x the NumPy read (target <= 3x)")
    print("where the time goes (one run, each kernel timed):")
    for name, seconds in _kernels(record, recordings).items():
        print(f"  {name:<30} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
