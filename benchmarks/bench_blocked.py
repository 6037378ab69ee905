"""How long a recorded epoch holds the training loop back, and end-to-end fit time.

    python benchmarks/bench_blocked.py [--models cnn resnet50] [--epochs 5] [--repeats 3]
                                       [--device cpu|cuda]

For each model, ``fit`` runs side by side, repeats interleaved: without the callback
and with it (recording every validation epoch). A clock callback notes, each epoch,
the time from the last validation batch's end to the next training batch's start
(the gap the record's gathering and hand-over sit in; Lightning's own epoch-end
work is in both runs) and the validation epoch's own time. Printed: the gap with the
callback minus the gap without it, as a share of the bare validation epoch, for the
first recorded epoch and for later ones (target <= 5 %), and the whole fit's time
with and without the callback, as it is: on a 2-core machine the writer thread
shares the CPU with training, so the record still costs wall time, only not inside
the loop's critical path.

Models: the demo CNN on the four Colored-digits sets (4 x 1,000 images, 28 px,
5,000 training images), and a torchvision ResNet-50 with random weights on
synthetic 224 px images (``--images`` per set, InD + 2 OOD, penultimate layer).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
from bench_callback import Classifier  # benchmarks/ is on the path of its scripts
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from deephys_lightning import DeephysCallback


class LoopClock(L.Callback):
    """Per epoch: the validation epoch's time and the gap from the last validation
    batch to the next training batch (or the end of fit)."""

    def __init__(self) -> None:
        self.validation: list[float] = []
        self.gaps: list[float] = []
        self._val_start = self._last_val_batch = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        if not trainer.sanity_checking:
            self._last_val_batch = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._val_start is not None:
            self.validation.append(time.perf_counter() - self._val_start)

    def _close_gap(self) -> None:
        if self._last_val_batch is not None:
            self.gaps.append(time.perf_counter() - self._last_val_batch)
            self._last_val_batch = None

    def on_train_batch_start(self, trainer, pl_module, *args, **kwargs) -> None:
        self._close_gap()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._close_gap()  # the last epoch's: to the end of fit (not compared)


def _cnn(images: int):
    from deephys_lightning.demo.data import make_colored_digits
    from deephys_lightning.demo.model import PENULTIMATE_LAYER, DigitClassifier

    # generated digits: any number per class (the real ones hold 500)
    data = make_colored_digits(train_per_class=500, val_per_class=images // 10, digits="generated")
    return (
        DigitClassifier,
        PENULTIMATE_LAYER,
        DataLoader(data.train, batch_size=128, shuffle=True),
        {name: DataLoader(ds, batch_size=256) for name, ds in data.val.items()},
    )


def _resnet50(images: int):
    import torchvision

    generator = torch.Generator().manual_seed(0)
    sets = {
        name: TensorDataset(
            torch.rand(images, 3, 224, 224, generator=generator),
            torch.randint(0, 1000, (images,), generator=generator),
        )
        for name in ("ind", "ood_a", "ood_b")
    }
    train = DataLoader(TensorDataset(*(t[:32] for t in sets["ind"].tensors)), batch_size=32)
    val = {name: DataLoader(ds, batch_size=64) for name, ds in sets.items()}

    def model():
        return Classifier(torchvision.models.resnet50(weights=None))

    return model, "net.avgpool", train, val


MODELS = {"cnn": _cnn, "resnet50": _resnet50}


def _median_gap(runs: list[tuple[LoopClock, float]], epochs: slice) -> float:
    return statistics.median(g for clock, _ in runs for g in clock.gaps[epochs])


def _fit(
    make, layer, train, val, epochs: int, record: bool, device: str = "cpu"
) -> tuple[LoopClock, float]:
    torch.manual_seed(0)
    clock = LoopClock()
    # The clock last: its batch end follows the callback's (capture is per batch, not
    # in the gap); its validation epoch end too (used only for the bare runs).
    callbacks: list[L.Callback] = [DeephysCallback(layer=layer)] if record else []
    callbacks.append(clock)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            max_epochs=epochs,
            callbacks=callbacks,
            logger=TensorBoardLogger(logdir),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(make(), train, val_dataloaders=val)
        return clock, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cnn"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000, help="validation images per set")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in args.models:
        images = args.images if name == "cnn" else min(args.images, 256)
        make, layer, train, val = MODELS[name](images)
        # warm-up: imports, first-call costs
        _fit(make, layer, train, val, 1, record=True, device=args.device)
        runs: dict[bool, list[tuple[LoopClock, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for record in (False, True):  # interleaved
                found = _fit(make, layer, train, val, args.epochs, record, args.device)
                runs[record].append(found)
        bare_val = statistics.median(v for clock, _ in runs[False] for v in clock.validation)

        print(
            f"{name} on {args.device}: {len(val)} sets x {images} images, {args.epochs} epochs, "
            f"{args.repeats} repeats; bare validation epoch {bare_val * 1e3:.0f} ms"
        )
        for label, epochs in (
            ("first recorded epoch", slice(0, 1)),
            ("later epochs", slice(1, -1)),
        ):
            extra = _median_gap(runs[True], epochs) - _median_gap(runs[False], epochs)
            print(
                f"  {label:22s} loop held {extra * 1e3:7.1f} ms = "
                f"{100 * extra / bare_val:5.1f} % of bare validation (target <= 5 %)"
            )
        plain = statistics.median(seconds for _, seconds in runs[False])
        recorded = statistics.median(seconds for _, seconds in runs[True])
        print(
            f"  fit: {plain:.2f} s without, {recorded:.2f} s with the callback "
            f"({recorded / plain:.2f}x; the writer thread shares the CPU)"
        )


if __name__ == "__main__":
    main()
