"""What the damage checks cost, each beside the same work without them, in one run.

    python benchmarks/bench_reliability.py [--images 50000] [--px 64]

- Thumbnails at ImageNet scale (``--images`` images of ``--px`` px): writing the file
  alone beside writing it with its per-image CRC-32C checksums; random one-image
  reads (p50 / p95 of 2,000) of the same file with and without its checksums.
- Event files (a synthetic log: InD + 1 OOD set of 10,000 images x 512 neurons, 100
  classes, 2 steps, written by the real writer): loading it with TensorBoard's own
  multiplexer beside the checked one that ``read_log`` uses; the light scan for
  recorded steps that the callback makes before its first write to a directory, on
  that log and on a long training's log of ``--scalars`` scalar events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_server, bench_scores
from bench_scores import timed  # noqa: E402 (found through the path above)


def thumbnails(images: int, px: int) -> None:
    from tensorboard_plugin_deephys.log import assets

    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, size=(images, px, px, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        plain = os.path.join(folder, "plain.npy")
        write_plain = timed(lambda: np.save(plain, thumbs, allow_pickle=False), repeat=3)
        checksums = timed(lambda: assets.image_checksums(thumbs), repeat=3)
        relative = assets.write_thumbnails(folder, "set", thumbs)
        checked = assets.open_thumbnails(folder, relative)
        unchecked = assets.ThumbnailFile(plain)  # no checksums beside it: read unchecked
        order = rng.integers(0, images, size=2000)
        reads = {}
        for name, opened in (("checked", checked), ("unchecked", unchecked)):
            times = []
            for index in order:
                start = time.perf_counter()
                opened[int(index)]
                times.append(time.perf_counter() - start)
            reads[name] = times
    size = thumbs.nbytes / 2**20
    print(f"thumbnails: {images} images of {px} px ({size:.0f} MiB)")
    print(f"  write the file                    {write_plain:8.3f} s")
    print(
        f"  + per-image checksums             {checksums:8.3f} s   "
        f"({checksums / write_plain:.2f}x the write; {images * 4 / 2**10:.0f} KiB beside it)"
    )
    for name in ("checked", "unchecked"):
        times = sorted(reads[name])
        p50, p95 = statistics.median(times), times[int(0.95 * len(times))]
        print(
            f"  one-image read, {name:9s}         p50 {p50 * 1e6:6.0f} us   p95 {p95 * 1e6:6.0f} us"
        )


def event_files(scalars: int) -> None:
    from bench_server import write_imagenet_scale_log
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    from deephys_lightning import fast_crc
    from deephys_lightning.event_files import CheckedEventMultiplexer, recorded_steps

    fast_crc.install()
    with tempfile.TemporaryDirectory() as logdir:
        write_imagenet_scale_log(
            logdir,
            10_000,
            512,
            100,
            run="run",
            names=("ind", "ood"),
            thumbnail_px=32,
            max_activation_bytes=None,
        )
        run_dir = os.path.join(logdir, "run")
        size = sum(
            os.path.getsize(os.path.join(run_dir, n))
            for n in os.listdir(run_dir)
            if "tfevents" in n
        )

        def load(multiplexer_type):
            multiplexer = multiplexer_type(size_guidance={"tensors": 0, "scalars": 0})
            multiplexer.AddRunsFromDirectory(logdir)
            multiplexer.Reload()

        tensorboard_s = timed(lambda: load(plugin_event_multiplexer.EventMultiplexer), repeat=3)
        checked_s = timed(lambda: load(CheckedEventMultiplexer), repeat=3)
        scan_s = timed(lambda: recorded_steps(run_dir), repeat=3)
        long_log = os.path.join(logdir, "long")
        _write_scalars(long_log, scalars)
        long_scan_s = timed(lambda: recorded_steps(long_log))
        print(f"event files: {size / 2**20:.0f} MiB, 2 steps")
        print(f"  load, TensorBoard's multiplexer   {tensorboard_s:8.3f} s")
        print(
            f"  load, checked multiplexer         {checked_s:8.3f} s   "
            f"({checked_s / tensorboard_s:.2f}x)"
        )
        print(
            f"  scan for recorded steps           {scan_s:8.3f} s   "
            f"({scan_s / tensorboard_s:.3f}x the load)"
        )
        print(f"  scan, a log of {scalars} scalar events  {long_scan_s:6.3f} s")


def _write_scalars(run_dir: str, count: int) -> None:
    """A long training's log: ``count`` scalar events (training curves), no record."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(run_dir, max_queue_size=10_000)
    for step in range(count):
        summary = scalar_pb("train/loss", float(step % 7))
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--scalars", type=int, default=500_000, help="events of the long log")
    args = parser.parse_args()
    thumbnails(args.images, args.px)
    event_files(args.scalars)


if __name__ == "__main__":
    main()
