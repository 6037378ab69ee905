"""The scores and OOD detectors at ImageNet scale, and the write of an epoch, beside
another checkout.

    git worktree add /tmp/deephys-base <commit>        # the code to compare with
    python benchmarks/bench_scores.py --baseline /tmp/deephys-base [--images 50000]

Synthetic data, the same in every process: an InD and one OOD set of ``--images`` x
``--neurons`` float16 activations (after ReLU), ``--classes`` classes and as many
logits per image. Each tree runs in its own process. Printed:

- ``scores``: ``metrics.ood_scores`` + ``summary()`` of the OOD set (both trees);
- ``write one epoch``: ``writing.write_record`` of both sets, thumbnails and the
  activation matrix off as at this scale by default, with this tree's default OOD
  detectors (the baseline has none), and the ratio this tree / baseline;
- this tree only, the cost of each detector: ``logit_scores`` over every batch of
  the validation loop (batches of 256) plus the four metrics, for the logit detectors
  together; Mahalanobis and KNN (fit + scoring + metrics) each.

Without ``--baseline`` only this tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic(images: int, neurons: int, classes: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    sets = {}
    for name, shift in (("ind", 0.0), ("ood", -0.3)):
        labels = rng.integers(0, classes, images)
        logits = rng.standard_normal((images, classes), dtype=np.float32)
        logits[np.arange(images), labels] += 3.0 + shift * 4  # the OOD set is less sure
        correct = rng.random(images) < 0.7
        sets[name] = {
            "labels": labels,
            "predictions": np.where(correct, labels, rng.integers(0, classes, images)),
            "acts": np.maximum(
                rng.standard_normal((images, neurons), dtype=np.float32) + shift, 0
            ).astype(np.float16),
            "logits": logits,
        }
    return sets


def timed(action, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def measure(images: int, neurons: int, classes: int) -> dict[str, float]:
    """Every figure of this process's tree, in seconds (the best of a few runs)."""
    import torch

    from deephys_lightning import metrics
    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log.metadata import Record

    torch.set_num_threads(os.cpu_count() or 1)
    data = synthetic(images, neurons, classes)
    stats = {
        name: metrics.dataset_statistics(d["acts"], d["labels"], classes)
        for name, d in data.items()
    }
    figures = {}
    figures["scores"] = timed(
        lambda: metrics.ood_scores(*stats["ind"], *stats["ood"]).summary(), repeat=3
    )
    try:
        from deephys_lightning import detection
    except ImportError:
        detection = None  # a tree from before the detectors

    def logit_scores(name: str) -> np.ndarray:
        logits = torch.from_numpy(data[name]["logits"])
        return torch.cat(
            [detection.logit_scores(logits[i : i + 256]) for i in range(0, len(logits), 256)]
        ).numpy()

    recorded = {}
    if detection is not None:
        recorded = {name: logit_scores(name) for name in data}  # as the callback keeps them

    def write() -> None:
        with tempfile.TemporaryDirectory() as logdir:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            sink = EventFileSink(EventFileWriter(logdir))
            record = Record(
                step=1,
                epoch=0,
                layers=("fc",),
                datasets=("ind", "ood"),
                class_names=tuple(str(c) for c in range(classes)),
                num_images={name: images for name in data},
                top_k=32,
            )
            recordings = {}
            for name, d in data.items():
                extra = {"logit_scores": recorded[name]} if recorded else {}
                recordings[name] = DatasetRecording(
                    labels=d["labels"],
                    predictions=d["predictions"],
                    activations={"fc": d["acts"]},
                    **extra,
                )
            options = {"detectors": detection.DEFAULT_DETECTORS} if detection else {}
            write_record(
                sink,
                record,
                recordings,
                log_dir=logdir,
                max_activation_bytes=32 * 2**20,
                **options,
            )
            sink.close()

    figures["write one epoch"] = timed(write, repeat=2)
    if detection is None:
        return figures

    def logit_detectors() -> None:
        scores = {name: logit_scores(name) for name in data}
        detection.logit_detections(scores, ind="ind", detectors=detection.LOGIT_DETECTORS)

    figures["detectors: msp + max_logit + energy"] = timed(logit_detectors, repeat=2)
    acts = {name: d["acts"] for name, d in data.items()}
    for name in detection.FEATURE_DETECTORS:
        figures[f"detector: {name}"] = timed(
            lambda name=name: detection.feature_detections(
                "fc",
                acts,
                ind="ind",
                ind_labels=data["ind"]["labels"],
                num_classes=classes,
                detectors=(name,),
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another checkout of this project to compare with")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.images, args.neurons, args.classes)))
        return
    trees = {"this tree": ROOT}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    results = {}
    for label, tree in trees.items():
        command = [sys.executable, os.path.abspath(__file__), "--child"]
        command += ["--images", str(args.images), "--neurons", str(args.neurons)]
        command += ["--classes", str(args.classes)]
        env = {**os.environ, "PYTHONPATH": tree}
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tree)
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"InD + 1 OOD set, {args.images} images x {args.neurons} neurons, "
        f"{args.classes} classes and logits; {os.cpu_count()} CPUs"
    )
    names = list(results["this tree"])
    width = max(len(n) for n in names)
    header = f"{'':{width}}  {'this tree':>10}"
    if "baseline" in results:
        header += f"  {'baseline':>10}  {'ratio':>6}"
    print(header)
    for name in names:
        line = f"{name:{width}}  {results['this tree'][name]:>9.3f}s"
        if "baseline" in results and name in results["baseline"]:
            base = results["baseline"][name]
            line += f"  {base:>9.3f}s  {results['this tree'][name] / base:>5.2f}x"
        print(line)
    if "baseline" in results:
        added = sum(
            results["this tree"][n] - results["baseline"].get(n, 0.0) for n in ("scores",)
        ) + results["this tree"].get("detectors: msp + max_logit + energy", 0.0)
        print(f"scores + default detectors add {added:.3f}s per epoch")


if __name__ == "__main__":
    main()
