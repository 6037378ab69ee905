"""Cost of DeephysCallback on a validation epoch, and its peak memory.

    python benchmarks/bench_callback.py [--models cnn resnet18] [--repeats 2] [--memory]
    python benchmarks/bench_callback.py --models --device cpu|cuda [--images N]

Speed: ``trainer.validate`` of the same model on the same data, side by side in one
run, interleaved: without the callback, with capture only (hooks, buffers,
gathering; the write step replaced by nothing), and with capture and writing.
Models: the demo CNN on the four Colored-digits sets (4 x 1,000 images, 28 px), and
a ResNet18 with random weights on 2 x 1,000 random 224 px images (penultimate layer,
512 neurons). Targets: capture <= 1.10x, capture + writing <= 1.25x.

First and later epochs (``--device cpu|cuda``): a torchvision ResNet-50 (random
weights) validating InD + 2 OOD sets of synthetic 224 px images inside one ``fit``
(one training batch per epoch), each validation epoch timed: without the callback,
and with it on its first recorded epoch and on a later one. Targets: later <= 1.05x,
first <= 1.15x.

Memory (``--memory``): peak resident memory of a validation run that records a
2,048-neuron layer on 50,000 images, minus the same run without the callback, in
fresh processes (the peak is reset after a warm-up run, so it is the recording
run's own); compared with the float16 matrix itself (200 MB). Target: <= 1.3x.

Log size (``--log-size``): what one recorded epoch adds to the event file at
ImageNet scale (4 sets x 50,000 images x 2,048 neurons, 1,000 classes), written
through the real writer.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deephys_lightning import DeephysCallback
from deephys_lightning.writing.record_writer import RecordWriter


class NoWrite(RecordWriter):
    """A record writer that writes nothing."""

    def write(self, trainer, plan, epoch) -> None:
        self.thumbnail_policy.discard()


class CaptureOnly(DeephysCallback):
    """The callback with its write step replaced by nothing: what capture alone costs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._writer = NoWrite(self._write_settings())


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class EpochClock(L.Callback):
    """Wall time of each validation epoch (the device synchronised at both ends)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # listed after DeephysCallback: its gathering and writing are inside
        self._sync(trainer)
        self.seconds.append(time.perf_counter() - self._start)


def _first_and_later(device: str, images: int, batch: int, precision: str, repeats: int) -> None:
    """ResNet-50 validation epochs in one fit: without the callback, and with it on a
    first recorded epoch (thumbnails kept) and a later one (thumbnails made on the
    device, then dropped: the images did not change)."""
    import torchvision

    generator = torch.Generator().manual_seed(0)
    sets = {
        name: TensorDataset(
            torch.rand(images, 3, 224, 224, generator=generator),
            torch.randint(0, 1000, (images,), generator=generator),
        )
        for name in ("ind", "ood_a", "ood_b")
    }
    loaders = {name: DataLoader(ds, batch_size=batch) for name, ds in sets.items()}
    train = DataLoader(sets["ind"], batch_size=batch)

    def fit(callbacks) -> list[float]:
        torch.manual_seed(0)
        clock = EpochClock()
        with tempfile.TemporaryDirectory() as logdir:
            trainer = L.Trainer(
                accelerator=device,
                devices=1,
                precision=precision,
                max_epochs=2,
                limit_train_batches=1,
                num_sanity_val_steps=0,
                logger=TensorBoardLogger(logdir),
                callbacks=[*callbacks, clock],
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
            )
            model = Classifier(torchvision.models.resnet50(num_classes=1000))
            trainer.fit(model, train, val_dataloaders=loaders)
        return clock.seconds

    bare_first, bare_later, first, later = [], [], [], []
    for _ in range(repeats):  # interleaved, so drift hits every side alike
        epochs = fit([])
        bare_first.append(epochs[0])
        bare_later.append(epochs[1])
        epochs = fit([DeephysCallback(layer="net.avgpool")])
        first.append(epochs[0])
        later.append(epochs[1])
    print(
        f"\nResNet-50, 3 x {images} images, 224 px, batch {batch}, {device}, {precision} "
        f"(one validation epoch, median of {repeats} fits; each epoch against the same "
        "epoch without the callback):"
    )
    for label, seconds, bare in (
        ("first recorded epoch", first, bare_first),
        ("later recorded epoch", later, bare_later),
    ):
        t, base = statistics.median(seconds), statistics.median(bare)
        print(f"  {label:22s} {t:8.2f} s   without {base:8.2f} s   ratio {t / base:.2f}x")


def _validate(model, loaders, callbacks, logdir) -> float:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(logdir),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.validate(model, dataloaders=loaders, verbose=False)
    return time.perf_counter() - start


def _cnn_case():
    from deephys_lightning.demo.data import make_colored_digits
    from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier

    data = make_colored_digits(500, 100, seed=0, digits="generated")  # any size
    loaders = {name: DataLoader(ds, batch_size=256) for name, ds in data.val.items()}
    return "demo CNN, 4 x 1,000 images", DigitClassifier(), loaders, PENULTIMATE_LAYER


def _resnet_case():
    import torchvision

    generator = torch.Generator().manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    loaders = {
        name: DataLoader(
            TensorDataset(
                torch.rand(1000, 3, 224, 224, generator=generator),
                torch.randint(0, 10, (1000,), generator=generator),
            ),
            batch_size=64,
        )
        for name in ("ind", "ood")
    }
    return "ResNet18, 2 x 1,000 images, 224 px", Classifier(net), loaders, "net.avgpool"


def _speed(case, repeats: int) -> None:
    title, model, loaders, layer = case
    times = {"without callback": [], "capture only": [], "capture + writing": []}
    with tempfile.TemporaryDirectory() as logdir:
        _validate(model, loaders, [], logdir)  # warm-up
        for _ in range(repeats):  # interleaved, so drift hits every side alike
            times["without callback"].append(_validate(model, loaders, [], logdir))
            times["capture only"].append(
                _validate(model, loaders, [CaptureOnly(layer=layer)], logdir)
            )
            # a fresh callback each time: its first record also writes the thumbnails
            times["capture + writing"].append(
                _validate(model, loaders, [DeephysCallback(layer=layer)], logdir)
            )
    base = statistics.median(times["without callback"])
    print(f"\n{title} (trainer.validate, median of {repeats}):")
    for label, values in times.items():
        t = statistics.median(values)
        print(f"  {label:20s} {t:8.2f} s   ratio {t / base:.2f}x")


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_child(mode: str) -> None:
    """Validate a 2,048-neuron layer on 50,000 images; print the peak RSS of that part."""
    torch.manual_seed(0)
    n, m = 50_000, 2048
    net = nn.Sequential(nn.Linear(8, m), nn.Linear(m, 10))
    loader = DataLoader(TensorDataset(torch.rand(n, 8), torch.randint(0, 10, (n,))), 1000)
    callbacks = {
        "none": [],
        "capture": [CaptureOnly(layer="net.0", thumbnails=False)],
        "write": [DeephysCallback(layer="net.0", thumbnails=False)],
    }[mode]
    with tempfile.TemporaryDirectory() as logdir:
        _validate(Classifier(net), {"ind": loader}, [], logdir)  # imports, warm-up
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak (VmHWM) to the current RSS
        _validate(Classifier(net), {"ind": loader}, callbacks, logdir)
    print(json.dumps({"peak": _peak_rss()}))


def _memory() -> None:
    def peak(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", mode],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])["peak"]

    matrix = 50_000 * 2048 * 2
    without = peak("none")
    print("\npeak memory of a validation run, 50,000 images x 2,048 neurons:")
    print(f"  without callback       {without / 2**20:8.0f} MiB")
    for mode, label in (("capture", "capture only"), ("write", "capture + writing")):
        extra = peak(mode) - without
        print(
            f"  {label:20s} +{extra / 2**20:7.0f} MiB = {extra / matrix:.2f}x the float16 "
            f"matrix ({matrix / 2**20:.0f} MiB)"
        )


def _log_size() -> None:
    """Bytes one recorded epoch adds to the log at ImageNet scale, through the real writer."""
    import os

    import numpy as np
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning import fast_crc, metrics
    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log import metadata
    from tensorboard_plugin_deephys.log.metadata import TOP_PREDICTIONS, Record

    fast_crc.install()
    n, m, c = 50_000, 2048, 1000
    rng = np.random.default_rng(0)
    names = ("imagenet", "v2", "sketch", "style")

    def recording() -> DatasetRecording:
        # each image's top 5 classes and probabilities, as the callback always writes them
        top_classes = rng.integers(0, c, (n, TOP_PREDICTIONS), dtype=np.int32)
        top_probabilities = -np.sort(-rng.random((n, TOP_PREDICTIONS), dtype=np.float32))
        return DatasetRecording(
            labels=rng.integers(0, c, n),
            predictions=top_classes[:, 0],
            activations={
                "fc": np.maximum(rng.standard_normal((n, m), dtype=np.float32), 0).astype(
                    np.float16
                )
            },
            top_classes=top_classes,
            top_probabilities=top_probabilities,
        )

    recordings = {name: recording() for name in names}
    record = Record(
        step=1,
        epoch=0,
        layers=("fc",),
        datasets=names,
        class_names=tuple(map(str, range(c))),
        num_images={name: n for name in names},
        top_k=32,
    )
    # The neuron view's distributions: their bytes and the time of their two kernels.
    tally = {"bytes": 0, "seconds": 0.0}

    def timed(kernel):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return kernel(*args, **kwargs)
            finally:
                tally["seconds"] += time.perf_counter() - start

        return run

    kernels = {name: getattr(metrics, name) for name in ("histogram_range", "neuron_distributions")}
    for name, kernel in kernels.items():
        setattr(metrics, name, timed(kernel))
    try:
        with tempfile.TemporaryDirectory() as logdir:
            sink = EventFileSink(EventFileWriter(logdir))
            start = time.perf_counter()
            view = write_record(
                sink, record, recordings, log_dir=logdir, max_activation_bytes=32 * 2**20
            )
            sink.close()
            seconds = time.perf_counter() - start
            # the events and the step pack beside them (plugins/deephys/steps/)
            size = sum(
                os.path.getsize(os.path.join(folder, f))
                for folder, _, files in os.walk(logdir)
                for f in files
            )
            tally["bytes"] = sum(
                array.nbytes
                for arrays in view.layers.values()
                for kind, array in arrays.items()
                if kind in metadata.DISTRIBUTION_KINDS
            )
    finally:
        for name, kernel in kernels.items():
            setattr(metrics, name, kernel)
    thumbs = n * 64 * 64 * 3
    print("\nlog size of one recorded epoch, 4 sets x 50,000 images x 2,048 neurons, 1,000 classes")
    print(
        f"  view data and scores (default: no full matrix) {size / 2**20:7.1f} MiB in all, "
        f"{size / len(names) / 2**20:.1f} MiB per dataset, written in {seconds:.1f} s"
    )
    rest = size - tally["bytes"]
    print(
        f"  of which the neuron view's distributions (histograms, fire fractions, bottom "
        f"{record.top_k}, interval examples) {tally['bytes'] / 2**20:.1f} MiB = "
        f"+{100 * tally['bytes'] / rest:.1f}% of the rest, computed in {tally['seconds']:.1f} s"
    )
    print(f"  (+ the full float16 matrix if enabled: {n * m * 2 / 2**20:7.1f} MiB per dataset)")
    print(f"  (+ thumbnails once per dataset at 64 px: {thumbs / 2**20:7.1f} MiB per dataset)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["cnn", "resnet18"])
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="also time ResNet-50 validation epochs on this device: first and later "
        "recorded epochs beside none (cuda: bf16-mixed, batch 256, 3 x 10,000 images; "
        "cpu: batch 64, 3 x 1,024)",
    )
    parser.add_argument("--images", type=int, help="images per set for --device")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--log-size", action="store_true")
    parser.add_argument(
        "--memory-child", choices=["none", "capture", "write"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_child is not None:
        _memory_child(args.memory_child)
        return
    cases = {"cnn": _cnn_case, "resnet18": _resnet_case}
    for name in args.models:
        _speed(cases[name](), args.repeats)
    if args.device == "cuda":
        _first_and_later("cuda", args.images or 10_000, 256, "bf16-mixed", args.repeats)
    elif args.device == "cpu":
        _first_and_later("cpu", args.images or 1024, 64, "32-true", args.repeats)
    if args.memory:
        _memory()
    if args.log_size:
        _log_size()


if __name__ == "__main__":
    main()
