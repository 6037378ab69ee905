"""CIFAR-10 -> CIFAR-10.2 with Deephys: a ResNet18 with a 50-neuron layer before its classifier.

The Deephys paper's CIFAR-10 experiment: train a ResNet18 (the CIFAR variant: 3x3
first convolution, no max-pooling) whose 512 pooled features go through a
50-neuron fully connected layer, ``head.fc1``, before the 10-way classifier. The
CIFAR-10 test set is the in-distribution (InD) set and the CIFAR-10.2 test set
(a reproduction of CIFAR-10 by Lu et al., 2020) the out-of-distribution (OOD)
set. ``DeephysCallback`` records ``head.fc1`` at every validation epoch; the
score table of the last epoch is printed at the end, and TensorBoard's Deephys
tab shows the rest.

The data are read from ``--data-dir``; nothing is downloaded:

- CIFAR-10 in torchvision's layout, ``DIR/cifar-10-batches-py/`` (``data_batch_1``
  to ``data_batch_5``, ``test_batch``, ``batches.meta``: the python version of
  https://www.cs.toronto.edu/~kriz/cifar.html, extracted);
- CIFAR-10.2's published ``cifar102_test.npz`` (and ``cifar102_train.npz`` for
  ``--ood-train``) from https://github.com/modestyachts/cifar-10.2, in ``DIR`` or
  ``DIR/cifar-10.2/``.

A missing or malformed file ends the run with exit status 2 and a message naming
it. See docs/examples/cifar10.md.

Example::

    python examples/cifar10.py --data-dir ~/data                 # 30 epochs, ./lightning_logs
    python examples/cifar10.py --data-dir ~/data --epochs 1 --max-train 5000 --ood-train
    tensorboard --logdir lightning_logs                          # then the "Deephys" tab
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18
from torchvision.transforms import v2

from deephys_lightning import DeephysCallback
from deephys_lightning.scores import format_table, score_table

PROG = "examples/cifar10.py"
EXPERIMENT_NAME = "cifar10"
IND_NAME = "cifar10"
OOD_NAME = "cifar10.2"
OOD_TRAIN_NAME = "cifar10.2-train"
LAYER = "head.fc1"
NUM_CLASSES = 10
IMAGE_SIZE = 32
# Per-channel mean and standard deviation of the CIFAR-10 training images.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR102_FOLDER = "cifar-10.2"
CIFAR102_FILES = {"test": "cifar102_test.npz", "train": "cifar102_train.npz"}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR102_URL = "https://github.com/modestyachts/cifar-10.2"


class DataError(Exception):
    """The data files are missing or not in the expected format."""


@dataclasses.dataclass(frozen=True)
class DataFiles:
    """Where the CIFAR-10 batches and the CIFAR-10.2 ``.npz`` files are."""

    cifar10: Path
    cifar102: dict[str, Path]


@dataclasses.dataclass(frozen=True)
class Images:
    """Images ``(N, 32, 32, 3)`` uint8 and their labels ``(N,)`` int64."""

    images: np.ndarray
    labels: np.ndarray

    def subset(self, n: int | None, seed: int) -> Images:
        """At most ``n`` images drawn at random (the same ones for a given seed), in order."""
        if n is None or n >= len(self.labels):
            return self
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.labels))[:n])
        return Images(self.images[keep], self.labels[keep])


# ---------------------------------------------------------------- finding the files


def find_data(data_dir: str | os.PathLike, *, ood_train: bool = False) -> DataFiles:
    """Locate every file the run needs, or say which ones are missing and where to get them.

    Raises:
        DataError: a file is missing.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(_missing_message(root, [f"{root} (not a directory)"]))
    cifar10 = root / CIFAR10_FOLDER
    if not cifar10.is_dir() and (root / CIFAR10_TRAIN_FILES[0]).is_file():
        cifar10 = root  # --data-dir points into the batches folder itself
    needed = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE]
    if cifar10.is_dir():
        missing = [str(cifar10 / name) for name in needed if not (cifar10 / name).is_file()]
    else:
        missing = [f"{cifar10}/ (data_batch_1 to data_batch_5, test_batch, batches.meta)"]
    splits = ("test", "train") if ood_train else ("test",)
    cifar102 = {}
    for split in splits:
        name = CIFAR102_FILES[split]
        candidates = [root / name, root / CIFAR102_FOLDER / name]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            missing.append(f"{candidates[0]} (or {candidates[1]})")
        else:
            cifar102[split] = found
    if missing:
        raise DataError(_missing_message(root, missing))
    return DataFiles(cifar10=cifar10, cifar102=cifar102)


def _missing_message(root: Path, missing: list[str]) -> str:
    lines = [f"--data-dir {str(root)!r} lacks the data files (nothing is downloaded):"]
    lines += [f"  missing: {path}" for path in missing]
    lines += [
        "Get them with:",
        f"  CIFAR-10: download {CIFAR10_URL} and extract it in {root}",
        f"    (it unpacks to {root / CIFAR10_FOLDER}/; torchvision's "
        f"CIFAR10({str(root)!r}, download=True) does the same)",
        f"  CIFAR-10.2: {', '.join(CIFAR102_FILES.values())} from {CIFAR102_URL},",
        f"    into {root} or {root / CIFAR102_FOLDER}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- reading the files


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and NumPy arrays only: a file from --data-dir runs no code."""

    ALLOWED = frozenset(
        (module, name)
        for prefix in ("numpy.core", "numpy._core")
        for module, name in (
            (f"{prefix}.multiarray", "_reconstruct"),
            (f"{prefix}.multiarray", "scalar"),
            (f"{prefix}.numeric", "_frombuffer"),
        )
    ) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # bytes, protocol 2

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    """A CIFAR-10 python batch as a dict with str keys (the files were pickled by Python 2)."""
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="bytes").load()
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        KeyError,
        IndexError,
    ) as error:
        raise DataError(f"cannot read {path} as a CIFAR-10 python batch: {error}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (no dict inside)")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}


def read_cifar10_batches(folder: Path, names: Sequence[str]) -> Images:
    """Concatenate CIFAR-10 batches: rows of 3072 bytes, the R, G and B planes, row-major.

    Raises:
        DataError: a file cannot be read or lacks ``data`` / ``labels``.
    """
    images, labels = [], []
    for name in names:
        entry = _unpickle(folder / name)
        if "data" not in entry or "labels" not in entry:
            raise DataError(f"{folder / name} lacks the keys b'data' and b'labels'")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise DataError(f"{folder / name}: b'data' has shape {data.shape}, not (N, 3072)")
        images.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
        labels.append(np.asarray(entry["labels"], dtype=np.int64))
    return _checked(Images(np.concatenate(images), np.concatenate(labels)), folder)


def read_class_names(folder: Path) -> list[str]:
    """The ten class names of ``batches.meta``."""
    meta = _unpickle(folder / CIFAR10_META_FILE)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if len(names) != NUM_CLASSES:
        raise DataError(
            f"{folder / CIFAR10_META_FILE}: expected {NUM_CLASSES} b'label_names', got {names!r}"
        )
    return names


def read_cifar102(path: Path) -> Images:
    """A CIFAR-10.2 ``.npz``: ``images`` ``(N, 32, 32, 3)`` uint8 and ``labels`` ``(N,)``.

    Raises:
        DataError: the file cannot be read or lacks those arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz or "labels" not in npz:
                raise DataError(f"{path} lacks the arrays 'images' and 'labels' ({npz.files})")
            data = Images(npz["images"], npz["labels"].astype(np.int64))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as a CIFAR-10.2 .npz file: {error}") from None
    if data.images.dtype != np.uint8 or data.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(
            f"{path}: 'images' is {data.images.dtype} {data.images.shape}, "
            f"not uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)"
        )
    return _checked(data, path)


def _checked(data: Images, source: Path) -> Images:
    if len(data.images) != len(data.labels):
        raise DataError(f"{source}: {len(data.images)} images but {len(data.labels)} labels")
    if len(data.labels) and not (data.labels.min() >= 0 and data.labels.max() < NUM_CLASSES):
        raise DataError(f"{source}: labels outside 0..{NUM_CLASSES - 1}")
    return data


class ImageArray(Dataset):
    """``(image, label)`` pairs from uint8 ``(N, H, W, 3)`` arrays, through ``transform``."""

    def __init__(self, data: Images, transform: nn.Module) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(data.labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def eval_transform() -> nn.Module:
    """uint8 CHW -> float, normalized with the CIFAR-10 mean and std."""
    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    )


def train_transform() -> nn.Module:
    """The standard CIFAR augmentation (random 32 px crop of the 4 px padded image, flip)."""
    return v2.Compose(
        [
            v2.RandomCrop(IMAGE_SIZE, padding=4),
            v2.RandomHorizontalFlip(),
            eval_transform(),
        ]
    )


# ---------------------------------------------------------------- the model


def cifar_resnet18(num_classes: int = NUM_CLASSES, width: int = 50) -> nn.Module:
    """torchvision's ResNet18 for 32 px images, with a ``width``-neuron layer before the classifier.

    The first convolution is 3x3 with stride 1 and there is no max-pooling (the usual
    CIFAR variant); the head is ``fc1`` (512 -> ``width``), ReLU, ``classifier``.
    """
    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(net.fc.in_features, width),
            relu=nn.ReLU(),
            classifier=nn.Linear(width, num_classes),
        )
    )
    return net


class CifarResNet(L.LightningModule):
    """The ResNet18 as ``backbone`` (512 pooled features) and ``head``, the 50-neuron layer
    ``head.fc1`` and the classifier; SGD with Nesterov momentum and a cosine schedule."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        width: int = 50,
        lr: float = 0.1,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        net = cifar_resnet18(num_classes, width)
        head, net.fc = net.fc, nn.Identity()
        self.backbone = net
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == y).float().mean())
        return loss

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        x, y = batch
        logits = self(x)  # the callback's predictions are the arg-max of this forward
        self.log("val/loss", F.cross_entropy(logits, y), add_dataloader_idx=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), add_dataloader_idx=True)

    def configure_optimizers(self) -> dict[str, object]:
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=self.hparams.weight_decay,
        )
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ---------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class Loaders:
    train: DataLoader
    val: dict[str, DataLoader]  # InD first
    class_names: list[str]


def make_loaders(files: DataFiles, args: argparse.Namespace) -> Loaders:
    """The training loader and the named validation loaders: CIFAR-10 test first, then OOD."""
    train = read_cifar10_batches(files.cifar10, CIFAR10_TRAIN_FILES).subset(
        args.max_train, args.seed
    )
    val_sets = {IND_NAME: read_cifar10_batches(files.cifar10, [CIFAR10_TEST_FILE])}
    val_sets[OOD_NAME] = read_cifar102(files.cifar102["test"])
    if "train" in files.cifar102:
        val_sets[OOD_TRAIN_NAME] = read_cifar102(files.cifar102["train"])
    options = {
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "persistent_workers": args.num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    val = {
        name: DataLoader(
            ImageArray(data.subset(args.max_val, args.seed), eval_transform()), **options
        )
        for name, data in val_sets.items()
    }
    train_loader = DataLoader(
        ImageArray(train, train_transform()),
        shuffle=True,
        drop_last=len(train.labels) > args.batch_size,
        **options,
    )
    return Loaders(train=train_loader, val=val, class_names=read_class_names(files.cifar10))


def train(args: argparse.Namespace, files: DataFiles) -> tuple[L.Trainer, str]:
    """Train with DeephysCallback on ``head.fc1``; return the trainer and its run directory."""
    L.seed_everything(args.seed, workers=True, verbose=False)
    loaders = make_loaders(files, args)
    logger = TensorBoardLogger(args.logdir, name=EXPERIMENT_NAME)
    callback = DeephysCallback(
        layer=LAYER,
        class_names=loaders.class_names,
        every_n_epochs=args.every_n_epochs,
        denormalize=(CIFAR10_MEAN, CIFAR10_STD),
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=not args.quiet,
        enable_model_summary=not args.quiet,
        log_every_n_steps=min(50, max(1, len(loaders.train))),
    )
    model = CifarResNet(len(loaders.class_names), args.width, args.lr, args.weight_decay)
    trainer.fit(model, loaders.train, val_dataloaders=loaders.val)
    return trainer, logger.log_dir


def print_scores(log_dir: str, logdir: str) -> None:
    """The score table of the run's last recorded epoch (``deephys-lightning scores``'s rows)."""
    run = os.path.relpath(log_dir, logdir)
    rows = [dataclasses.replace(row, run=run) for row in score_table(log_dir)]
    if not rows:
        print("no Deephys scores were recorded (was an epoch validated?)", flush=True)
        return
    last = max(row.step for row in rows)
    print(f"\nDeephys scores of {LAYER} at the last recorded epoch:", flush=True)
    print(format_table([row for row in rows if row.step == last]), flush=True)
    print(
        f"\nEvery epoch: deephys-lightning scores {log_dir}\n"
        f"The Deephys tab: tensorboard --logdir {logdir}",
        flush=True,
    )


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a ResNet18 with a 50-neuron layer before its classifier on "
        "CIFAR-10, record that layer with DeephysCallback on CIFAR-10 (InD) and CIFAR-10.2 "
        "(OOD), and print the novelty and spurious scores. Nothing is downloaded.",
    )
    add = parser.add_argument
    add("--data-dir", required=True, help=f"folder with {CIFAR10_FOLDER}/ and cifar102_test.npz")
    add(
        "--logdir", default="lightning_logs", help="TensorBoard log folder (default lightning_logs)"
    )
    add("--epochs", type=_positive, default=30, help="training epochs (default 30)")
    add("--batch-size", type=_positive, default=128, help="batch size per device (default 128)")
    add("--lr", type=float, default=0.1, help="peak SGD learning rate (default 0.1)")
    add("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    add("--width", type=_positive, default=50, help="neurons in head.fc1 (default 50)")
    add("--max-train", type=_positive, default=None, help="train on N random images (default all)")
    add("--max-val", type=_positive, default=None, help="N random images per validation set")
    add("--ood-train", action="store_true", help="also record CIFAR-10.2's training set")
    add("--every-n-epochs", type=_positive, default=1, help="record every N epochs (default 1)")
    add("--seed", type=int, default=0, help="random seed (default 0)")
    add("--accelerator", default="auto", help="cpu, gpu, ... (default auto)")
    add("--devices", type=_devices, default=1, help="devices: N, a list or auto (default 1)")
    add("--precision", default="32-true", help="e.g. bf16-mixed on GPUs (default 32-true)")
    add("--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="loader processes")
    add("--quiet", action="store_true", help="no progress bar or model summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        files = find_data(args.data_dir, ood_train=args.ood_train)
        trainer, log_dir = train(args, files)
    except DataError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if trainer.is_global_zero:
        print_scores(log_dir, args.logdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
