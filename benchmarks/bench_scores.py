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
  together; Mahalanobis and KNN (fit + scoring + metrics) each;
- this tree only, a second table: the head detectors of ``head_detectors`` (ReAct,
  ASH-S, SCALE, GEN, ViM, fDBD) on penultimate features: the fit on a reference set
  of ``--reference`` images and the scoring of the InD set and ``--ood-sets`` OOD
  sets (``--images`` x ``--neurons`` float16 each, ``--classes`` classes), each
  detector alone and all six in one call (they share the logits); GEN from the
  recorded logits (batches of 256) too. Repeats interleaved, best of ``--repeats``.

Without ``--baseline`` only this tree; ``--head-only`` only the second table.
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


def head_figures(
    images: int, neurons: int, classes: int, reference: int, ood_sets: int, repeats: int
) -> dict[str, list[float]]:
    """Per head detector (and all six together): [fit, score every set] in seconds,
    the best of ``repeats`` rounds, the detectors interleaved within each round."""
    import torch

    from deephys_lightning import head_detectors as hd

    rng = np.random.default_rng(1)

    def features(count: int, shift: float) -> np.ndarray:
        out = np.empty((count, neurons), dtype=np.float16)
        for start in range(0, count, 10_000):  # float32 in slices: less memory
            block = rng.standard_normal((min(10_000, count - start), neurons), dtype=np.float32)
            out[start : start + len(block)] = np.maximum(block + shift, 0)
        return out

    weight = rng.standard_normal((classes, neurons), dtype=np.float32) / np.sqrt(neurons)
    head = hd.LinearHead(weight * 4, rng.standard_normal(classes, dtype=np.float32))
    ref = features(reference, 0.0)
    sets = [features(images, 0.0)] + [features(images, -0.1 * (i + 1)) for i in range(ood_sets)]
    logits = [head.logits(x).numpy() for x in sets]  # as the callback records them
    best: dict[str, list[float]] = {}
    runs = [(name, (name,)) for name in hd.HEAD_DETECTORS] + [("all six", hd.HEAD_DETECTORS)]
    for _ in range(repeats):
        for label, names in runs:
            start = time.perf_counter()
            fitted = hd.fit_head_detectors(ref, head, names)
            fitted_at = time.perf_counter()
            for x in sets:
                hd.head_detector_scores(fitted, x)
            done = time.perf_counter()
            old = best.get(label, [float("inf")] * 2)
            best[label] = [min(old[0], fitted_at - start), min(old[1], done - fitted_at)]
        start = time.perf_counter()
        for batch_logits in logits:
            t = torch.from_numpy(batch_logits)
            np.concatenate([hd.gen_scores(t[i : i + 256]) for i in range(0, len(t), 256)])
        old = best.get("gen from logits (batches of 256)", [0.0, float("inf")])
        best["gen from logits (batches of 256)"] = [0.0, min(old[1], time.perf_counter() - start)]
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
        lambda: metrics.ood_scores(
            stats["ind"].means, stats["ind"].maxima, stats["ood"].means, stats["ood"].maxima
        ).summary(),
        repeat=3,
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
    if hasattr(detection, "FitSet"):  # fitted on a set of their own: the InD set here
        fit = {"fit": detection.FitSet(acts["ind"], data["ind"]["labels"], "reference")}
    else:  # a tree from before: fitted on the InD set itself
        fit = {"ind_labels": data["ind"]["labels"]}
    for name in ("mahalanobis", "knn"):
        figures[f"detector: {name}"] = timed(
            lambda name=name: detection.feature_detections(
                "fc", acts, ind="ind", num_classes=classes, detectors=(name,), **fit
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another checkout of this project to compare with")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=10_000, help="head detectors' fit set")
    parser.add_argument("--ood-sets", type=int, default=3, help="OOD sets the head detectors score")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the head detectors")
    parser.add_argument("--head-only", action="store_true", help="only the head detectors")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--head-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.images, args.neurons, args.classes)))
        return
    if args.head_child:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        sizes = (args.images, args.neurons, args.classes, args.reference)
        print(json.dumps(head_figures(*sizes, args.ood_sets, args.repeats)))
        return
    if not args.head_only:
        compare_trees(args)
    command = [sys.executable, os.path.abspath(__file__), "--head-child"]
    for flag in ("images", "neurons", "classes", "reference", "ood_sets", "repeats"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    head = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"\nhead detectors: fit on {args.reference} reference images, score InD + "
        f"{args.ood_sets} OOD sets of {args.images} x {args.neurons} (float16), "
        f"{args.classes} classes; best of {args.repeats}, {os.cpu_count()} CPUs"
    )
    width = max(len(n) for n in head)
    sets = args.ood_sets + 1
    print(f"{'':{width}}  {'fit':>8}  {f'score {sets} sets':>13}  {'total':>8}")
    for name, (fit, score) in head.items():
        print(f"{name:{width}}  {fit:>7.2f}s  {score:>12.2f}s  {fit + score:>7.2f}s")


def compare_trees(args: argparse.Namespace) -> None:
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
