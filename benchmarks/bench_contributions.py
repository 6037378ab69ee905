"""What pushed the predictions, at ImageNet scale: the write-time cost of the
contributions through the linear head (``deephys_lightning.contributions``) for one
set, beside one read of its activation matrix, repeats interleaved.

    python benchmarks/bench_contributions.py [--images 50000] [--neurons 2048]
                                             [--classes 1000] [--repeats 2]

Two heads: a *confident* one (each class's weights point along its images' mean
activation, as a trained head's do: the runner-up is far, few classes are within a
neuron's reach) and a *random* one (no margin at all: the worst case of the zeroing
effect, whose cost grows with the classes each neuron can reach). Float16 activations
(ReLU of a normal), random labels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deephys_lightning.contributions import (
    ZEROING_MAX_IMAGES,
    image_contributions,
    pair_contributions,
    zeroing_effect,
)
from deephys_lightning.head_detectors import LinearHead


def _data(images: int, neurons: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, images)
    prototypes = rng.normal(size=(classes, neurons)).astype(np.float32)
    acts = np.maximum(prototypes[labels] * 0.5 + rng.normal(size=(images, neurons)) * 0.5, 0)
    acts = acts.astype(np.float16)
    confident = LinearHead(prototypes * 0.05, np.zeros(classes))
    random = LinearHead(rng.normal(scale=0.02, size=(classes, neurons)), np.zeros(classes))
    return acts, labels, {"confident": confident, "random": random}


def _read(acts: np.ndarray) -> float:
    """One read of the matrix: a float32-accumulated sum, in blocks."""
    rows = torch.from_numpy(acts)
    return float(sum(rows[i : i + 4096].float().sum() for i in range(0, len(rows), 4096)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    acts, labels, heads = _data(args.images, args.neurons, args.classes)
    print(
        f"one set of {args.images:,} x {args.neurons:,} float16, {args.classes:,} classes, "
        f"torch threads {torch.get_num_threads()}; best of {args.repeats}, interleaved"
    )
    times: dict[str, list[float]] = {}

    def timed(name: str, function) -> None:
        start = time.perf_counter()
        function()
        times.setdefault(name, []).append(time.perf_counter() - start)

    for _ in range(args.repeats):
        timed("read the matrix", lambda: _read(acts))
        for kind, head in heads.items():
            predictions = head.logits(acts[:4096]).argmax(1).numpy()  # a sample: shapes only
            full = np.resize(predictions, len(labels))
            pairs = np.unique(np.stack([labels, full], 1), axis=0)
            timed(
                f"{kind}: image contributions",
                lambda h=head, p=full: image_contributions(acts, labels, p, h),
            )
            timed(
                f"{kind}: pair contributions",
                lambda h=head, p=full, q=pairs: pair_contributions(acts, labels, p, q, h),
            )
            timed(
                f"{kind}: zeroing effect ({ZEROING_MAX_IMAGES:,} images)",
                lambda h=head: zeroing_effect(acts, labels, h, max_images=ZEROING_MAX_IMAGES),
            )
    read = min(times["read the matrix"])
    print(f"{'':44} {'seconds':>8} {'x a read':>9}")
    for name, found in times.items():
        best = min(found)
        print(f"{name:44} {best:8.2f} {best / read:9.1f}")


if __name__ == "__main__":
    main()
