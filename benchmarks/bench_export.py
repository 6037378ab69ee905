"""Export to the Deephys app's files, beside the ``deephys`` package's exporter, in one run.

    python benchmarks/bench_export.py [--images 10000] [--neurons 512] [--classes 10]
                                      [--size 32] [--repeats 3] [--from-log]

The same random data go to both: activations (ReLU of a normal) of one layer, the
logits, float pixels in [0, 1] and labels. After one warm-up run of each, the
package's ``dataset_activity`` + ``save`` and :func:`write_test` (from the same float
pixels, and from uint8 pixels: what ``export_step`` hands it, the recorded
thumbnails) run ``--repeats`` times, interleaved; medians are compared. Also
printed: the time to write the same number of bytes with one ``write`` (the
floor), and that both files are byte-identical.
Target: >= 50x the package. ``--from-log`` also times ``export_step`` on a log of
that size written through the real writer (reading the log and decoding the
thumbnails included; median of ``--repeats``, each into a new folder).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deephys_lightning.export import DeephysModel, export_step, write_model, write_test


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def package_export(out: Path, data: dict) -> float:
    import deephys

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = deephys.model("bench", data["layers"], "logits")
        test = deephys.dataset_activity(
            "cifar",
            data["classes"],
            {"fc": data["acts"].copy(), "logits": data["logits"].copy()},
            model,
            data["images"],
            data["labels"],
        )
        model.save(str(out / "package.model"))
        test.save(str(out / "package.test"))
    return time.perf_counter() - start


def ours(out: Path, data: dict, images: np.ndarray, tag: str) -> None:
    model = DeephysModel("bench", data["layers"], "logits")
    write_model(out / f"ours-{tag}.model", model)
    activations = {"fc": data["acts"], "logits": data["logits"]}
    path, labels = out / f"ours-{tag}.test", data["labels"]
    write_test(path, model, "cifar", data["classes"], activations, images, labels)


def _remove(out: Path, stem: str) -> None:
    """Remove the ``.model`` and ``.test`` files of ``stem`` in ``out``, if any."""
    for suffix in (".model", ".test"):
        (out / f"{stem}{suffix}").unlink(missing_ok=True)


def make_data(images: int, neurons: int, classes: int, size: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "layers": {"fc": neurons, "logits": classes},
        "classes": [f"class {c}" for c in range(classes)],
        "acts": np.maximum(rng.normal(size=(images, neurons)), 0).astype(np.float32),
        "logits": rng.normal(size=(images, classes)).astype(np.float32),
        "images": rng.random((images, 3, size, size)),
        "labels": rng.integers(0, classes, images),
    }


def from_log(out: Path, data: dict, repeats: int) -> None:
    """export_step on a log written through the real writer (float16 matrix, thumbnails)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log.metadata import Record

    run = out / "log"
    sink = EventFileSink(EventFileWriter(str(run)))
    pixels = (data["images"] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    recordings = {
        name: DatasetRecording(
            labels=data["labels"],
            predictions=data["logits"].argmax(1),
            activations={"fc": data["acts"]},
            thumbnails=pixels,
            logits=data["logits"],
        )
        for name in ("ind", "ood")
    }
    record = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=tuple(data["classes"]),
        num_images={name: len(data["labels"]) for name in recordings},
        top_k=32,
        relu=True,
    )
    write_record(sink, record, recordings, log_dir=str(run), max_activation_bytes=None)
    sink.close()
    export_step(run, out / "exported")  # warm-up
    runs = []
    for _ in range(repeats):
        # Into a new folder, as an export usually goes, the last one removed outside
        # the timing (writing over 104 MiB of files frees them on the clock: 20-60 ms).
        shutil.rmtree(out / "exported")
        runs.append(timed(lambda: export_step(run, out / "exported")))
    seconds = statistics.median(runs)
    size = sum(f.stat().st_size for f in (out / "exported").iterdir()) / 2**20
    print(f"export_step from a log, 2 datasets ({size:.0f} MiB), reading included: {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--from-log", action="store_true")
    args = parser.parse_args()
    data = make_data(args.images, args.neurons, args.classes, args.size)
    pixels = (data["images"] * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        runs: dict[str, list[float]] = {"package": [], "float": [], "uint8": []}
        for repeat in range(args.repeats + 1):  # the first: a warm-up, not counted
            # Each side writes new files, as an export usually does: the last repeat's
            # are removed first, outside the timing (writing over a 54 MB file makes the
            # filesystem free it on the writer's clock: 20-30 ms here, on either side).
            _remove(out, "package")
            package = package_export(out, data)
            _remove(out, "ours-float")
            floats = timed(lambda: ours(out, data, data["images"], "float"))
            _remove(out, "ours-uint8")
            times = {
                "package": package,
                "float": floats,
                "uint8": timed(lambda: ours(out, data, pixels, "uint8")),
            }
            for name, seconds in times.items():
                if repeat:
                    runs[name].append(seconds)
        package, floats, uint8 = (statistics.median(runs[n]) for n in ("package", "float", "uint8"))
        size = (out / "package.test").stat().st_size
        blob = os.urandom(size)
        floors = []
        for _ in range(args.repeats):
            (out / "floor.bin").unlink(missing_ok=True)
            floors.append(timed(lambda: (out / "floor.bin").write_bytes(blob)))
        floor = min(floors)
        same = (
            all(
                (out / f"ours-{tag}.test").read_bytes() == (out / "package.test").read_bytes()
                for tag in ("float", "uint8")
            )
            and (out / "ours-float.model").read_bytes() == (out / "package.model").read_bytes()
        )
        print(
            f"{args.images} images x {args.neurons} neurons + {args.classes} logits, "
            f"{args.size} px: .test file {size / 1e6:.1f} MB; byte-identical files: {same}"
        )
        print(f"deephys package (dataset_activity + save): {package:.3f} s (median, warm)")
        print(f"write_test, float pixels:               {floats:7.3f} s {package / floats:5.1f}x")
        print(f"write_test, uint8 pixels (export_step): {uint8:7.3f} s {package / uint8:5.1f}x")
        print(f"one write of the same bytes (floor):    {floor:7.3f} s")
        if args.from_log:
            from_log(out, data, args.repeats)


if __name__ == "__main__":
    main()
