"""Thumbnail storage: bytes and write time per dataset, and the thumbnail route's
latency from local disk and from an S3 API server, side by side in one run.

    python benchmarks/bench_thumbnails.py [--images 50000] [--px 64] [--requests 300]

- Write, per dataset at ImageNet scale (``--images`` photographs of ``--px`` px, random
  crops of scikit-learn's two sample photographs, resized): today's encoded pack
  (``.thumbs``: format chosen, images encoded, one write) beside the raw ``.npy``
  pixels with their checksums that logs before 0.2 hold. Also the demo's coloured
  digits (2,000 at 28 px), which take the PNG path. Target: a dataset's thumbnails
  take <= 1/4 of the raw pixels (586 MiB at 50,000 x 64 px).
- Serve: a log with those thumbnails (written by the real writer) under a real
  ``tensorboard --load_fast=false``, once from local disk and once uploaded to moto's
  S3 server on 127.0.0.1: p50 / p95 of ``--requests`` random thumbnail requests
  (after one warm-up request, which reads the file's index), at TensorBoard's
  default reload interval (5 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))  # the tests' S3 and TB servers


def photographs(count: int, px: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, px, px, 3]: random crops (scale, position, mirror) of two photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((count, px, px, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(px, min(photo.shape[:2])))
        y = int(rng.integers(0, photo.shape[0] - side + 1))
        x = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((px, px), Image.BILINEAR)
        out[i] = np.asarray(crop)[:, :: 1 if rng.random() < 0.5 else -1]
    return out


def digits(count: int) -> np.ndarray:
    import torch

    from deephys_lightning.demo.data import make_colored_digits
    from deephys_lightning.recording.capture import to_thumbnails

    data = make_colored_digits(count // 10, count // 10, seed=0, digits="generated")
    dataset = next(iter(data.val.values()))
    inputs = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    return to_thumbnails(inputs, 64).numpy()


def folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )


def write_figures(label: str, pixels: np.ndarray) -> None:
    from deephys_lightning.writing import thumbnail_encoding
    from tensorboard_plugin_deephys.log import assets, thumbnail_pack

    with tempfile.TemporaryDirectory() as new, tempfile.TemporaryDirectory() as old:
        start = time.perf_counter()
        made = assets.Thumbnails.of(pixels)
        relative = assets.write_thumbnail_pack(new, "set", made, thumbnail_encoding.encode)
        new_s = time.perf_counter() - start
        start = time.perf_counter()
        assets.write_thumbnails(old, "set", pixels)
        old_s = time.perf_counter() - start
        new_bytes, old_bytes = folder_bytes(new), folder_bytes(old)
        pack = thumbnail_pack.ThumbnailPack(os.path.join(new, "plugins", "deephys", relative))
        decoded = np.asarray(pack)
        media_type = pack.media_type
    error = np.abs(decoded.astype(np.int16) - pixels).mean()
    mse = np.mean((decoded.astype(np.float64) - pixels) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
    n, h, w, _ = pixels.shape
    print(f"\n{label}: {n} images of {h} x {w} px ({pixels.nbytes / 2**20:.1f} MiB raw)")
    print(
        f"  encoded pack ({media_type:10s})  {new_bytes / 2**20:8.1f} MiB  "
        f"{new_bytes / old_bytes:5.2f}x the raw file   write {new_s:6.2f} s   "
        f"mean abs error {error:.2f}, PSNR {psnr:.1f} dB"
    )
    print(
        f"  raw .npy + checksums (<= 0.1)  {old_bytes / 2**20:8.1f} MiB  "
        f"{1:5.2f}x                  write {old_s:6.2f} s"
    )


def write_log(folder: str, pixels: np.ndarray) -> str:
    """A run with one recorded step whose InD set holds ``pixels`` as thumbnails."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning import fast_crc
    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log.metadata import Record

    fast_crc.install()
    rng = np.random.default_rng(1)
    run = os.path.join(folder, "run")
    os.makedirs(run)
    recordings = {}
    for name, images in (("ind", pixels), ("ood", pixels[:100])):
        n = len(images)
        recordings[name] = DatasetRecording(
            labels=rng.integers(0, 10, n),
            predictions=rng.integers(0, 10, n),
            activations={"fc": rng.random((n, 8)).astype(np.float16)},
            thumbnails=images,
        )
    record = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=tuple(map(str, range(10))),
        num_images={name: len(r.labels) for name, r in recordings.items()},
        top_k=4,
    )
    sink = EventFileSink(EventFileWriter(run))
    write_record(sink, record, recordings, log_dir=run)
    sink.close()
    return run


def latencies(base: str, count: int, requests_made: int) -> tuple[float, float]:
    url = f"{base}/data/plugin/deephys/thumbnail"
    rng = np.random.default_rng(2)
    session = requests.Session()
    session.get(url, params={"run": "run", "dataset": "ind", "index": 0}, timeout=60)
    times = []
    for index in rng.integers(0, count, size=requests_made):
        start = time.perf_counter()
        response = session.get(
            url, params={"run": "run", "dataset": "ind", "index": int(index)}, timeout=60
        )
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text[:200]
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def serve_figures(pixels: np.ndarray, requests_made: int) -> None:
    import fsspec
    from s3_server import new_bucket, running_s3_server
    from tensorboard_process import running_tensorboard

    with tempfile.TemporaryDirectory() as folder:
        run = write_log(folder, pixels)
        local = latencies_of(folder, pixels, requests_made, running_tensorboard)
        with running_s3_server():
            bucket = new_bucket()
            fsspec.filesystem("s3").put(run, f"{bucket}/logs/run", recursive=True)
            remote = latencies_of(f"s3://{bucket}/logs", pixels, requests_made, running_tensorboard)
            raw = ranged_gets(bucket, requests_made)
    print(f"\nthumbnail route, {requests_made} random images, tensorboard --load_fast=false:")
    for label, (p50, p95) in (
        ("local disk", local),
        ("S3 (moto, 127.0.0.1)", remote),
        ("  the server's own ranged GET of those bytes (boto3)", raw),
    ):
        print(f"  {label:22s} p50 {p50 * 1e3:6.1f} ms   p95 {p95 * 1e3:6.1f} ms")


def ranged_gets(bucket: str, requests_made: int) -> tuple[float, float]:
    """p50 / p95 of boto3 reading 2 KB ranges of the largest object (the pack): what the
    store itself takes (moto copies a whole object to serve a range of it)."""
    import boto3

    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    key = max(listed, key=lambda item: item["Size"])["Key"]
    times = []
    for _ in range(requests_made):
        start = time.perf_counter()
        client.get_object(Bucket=bucket, Key=key, Range="bytes=1000-2999")["Body"].read()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def latencies_of(logdir, pixels, requests_made, running_tensorboard):
    # TensorBoard's default reload interval (the test helper's 1 s would have it list
    # and read the bucket every second, competing with the requests measured)
    extra = ("--reload_interval", "5")
    with running_tensorboard(logdir, load_fast=False, timeout=600, extra=extra) as base:
        return latencies(base, len(pixels), requests_made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    photos = photographs(args.images, args.px)
    write_figures("photographs (ImageNet scale)", photos)
    write_figures("the demo's coloured digits", digits(2000))
    serve_figures(photos, args.requests)


if __name__ == "__main__":
    main()
