"""examples/cifar10.py end to end on a few generated images in the real file formats.

The CIFAR-10 python batches (pickles with b'data' (N, 3072) uint8 rows of R, G and B
planes, b'labels', and batches.meta's b'label_names') and CIFAR-10.2's .npz files
(``images`` (N, 32, 32, 3) uint8, ``labels`` int64, ...) are written in
torchvision's and the published layouts, so the example's own loading code runs.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from deephys_lightning import read_log

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10.py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _load_example():
    spec = importlib.util.spec_from_file_location("example_cifar10", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


cifar10 = _load_example()


def _images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random images (N, 32, 32, 3) uint8 and labels covering the classes in turn."""
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    # The published batches were pickled by Python 2: loaded with encoding="bytes",
    # their keys are bytes, b'data' a uint8 array of rows [R plane | G plane | B plane]
    # and b'labels' a list of ints.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    entry = {
        b"batch_label": path.name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": rows,
        b"filenames": [f"image_{i}.png".encode() for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(entry, protocol=2))


def fake_cifar10(root: Path, rng: np.random.Generator, per_batch: int, test: int) -> np.ndarray:
    """``root/cifar-10-batches-py/``; returns the test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", *_images(rng, per_batch))
    test_images, test_labels = _images(rng, test)
    _write_batch(folder / "test_batch", test_images, test_labels)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [name.encode() for name in CLASSES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return test_images


def fake_cifar102(folder: Path, split: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``folder/cifar102_<split>.npz`` with the published keys; returns the images."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = _images(rng, n)
    np.savez(
        folder / f"cifar102_{split}.npz",
        images=images,
        labels=labels.astype(np.int64),
        label_names=np.array(CLASSES),
        ti_indices=np.arange(n, dtype=np.int64),
        keywords=np.array(["keyword"] * n),
    )
    return images


def test_trains_and_records_cifar10_and_cifar102(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    ind_images = fake_cifar10(data, rng, per_batch=4, test=10)
    ood_images = fake_cifar102(data / "cifar-10.2", "test", rng, 8)
    fake_cifar102(data / "cifar-10.2", "train", rng, 6)
    logdir = tmp_path / "logs"
    argv = ["--data-dir", str(data), "--logdir", str(logdir), "--epochs", "1"]
    argv += ["--batch-size", "8", "--accelerator", "cpu", "--num-workers", "0", "--quiet"]
    assert cifar10.main([*argv, "--ood-train"]) == 0

    out = capsys.readouterr().out
    assert "novelty" in out and "spurious" in out
    assert "cifar10.2 " in out and "cifar10.2-train" in out
    log = read_log(logdir / "cifar10" / "version_0")
    assert log.datasets == ("cifar10", "cifar10.2", "cifar10.2-train")
    assert log.layers == ("head.fc1",)
    assert log.class_names == tuple(CLASSES)
    step = log.steps[-1]
    for name, n in (("cifar10", 10), ("cifar10.2", 8), ("cifar10.2-train", 6)):
        assert log.activations("head.fc1", name, step).shape == (n, 50)
        np.testing.assert_array_equal(log.labels(name, step), np.arange(n) % 10)
    # Thumbnails are the files' images: planes and rows decoded, normalization undone.
    for name, images in (("cifar10", ind_images), ("cifar10.2", ood_images)):
        thumbs = log.thumbnails(name).astype(int)
        assert thumbs.shape == images.shape
        assert np.abs(thumbs - images).max() <= 1


def test_missing_data_names_the_files_and_where_to_get_them(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")]
    assert cifar10.main(argv) == 2
    err = capsys.readouterr().err
    assert "nothing is downloaded" in err
    for expected in ("cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"):
        assert expected in err
    missing = [line for line in err.splitlines() if "missing:" in line]
    assert len(missing) == 2
    assert "cifar-10-batches-py" in missing[0] and "cifar102_test.npz" in missing[1]
    assert not any("cifar102_train.npz" in line for line in missing)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert "https://github.com/modestyachts/cifar-10.2" in err
    assert not (tmp_path / "logs").exists()


def test_ood_train_needs_the_training_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fake_cifar10(tmp_path, rng, per_batch=2, test=2)
    fake_cifar102(tmp_path, "test", rng, 2)
    assert cifar10.main(["--data-dir", str(tmp_path), "--ood-train"]) == 2
    missing = [line for line in capsys.readouterr().err.splitlines() if "missing:" in line]
    assert len(missing) == 1 and "cifar102_train.npz" in missing[0]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"image": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(2)}, "lacks the arrays"),
        ({"images": np.zeros((2, 3, 32, 32), np.uint8), "labels": np.zeros(2)}, "not uint8"),
    ],
)
def test_a_malformed_npz_is_a_clear_error(tmp_path, capsys, keys, message):
    fake_cifar10(tmp_path, np.random.default_rng(0), per_batch=2, test=2)
    np.savez(tmp_path / "cifar102_test.npz", **keys)
    assert cifar10.main(["--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")]) == 2
    assert message in capsys.readouterr().err


def test_each_missing_batch_is_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fake_cifar10(tmp_path, rng, per_batch=2, test=2)
    fake_cifar102(tmp_path, "test", rng, 2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    assert cifar10.main(["--data-dir", str(tmp_path)]) == 2
    missing = [line for line in capsys.readouterr().err.splitlines() if "missing:" in line]
    assert len(missing) == 1 and missing[0].endswith("data_batch_5")


def test_a_malformed_batch_is_a_clear_error(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fake_cifar10(tmp_path, rng, per_batch=2, test=2)
    fake_cifar102(tmp_path, "test", rng, 2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    assert cifar10.main(["--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")]) == 2
    assert "data_batch_3" in capsys.readouterr().err


def test_subsets_are_random_reproducible_and_in_order():
    data = cifar10.Images(np.zeros((100, 32, 32, 3), np.uint8), np.arange(100))
    first = data.subset(30, seed=1)
    assert len(first.labels) == 30 and first.images.shape == (30, 32, 32, 3)
    assert (np.diff(first.labels) > 0).all() and first.labels[-1] > 30  # spread, in order
    np.testing.assert_array_equal(first.labels, data.subset(30, seed=1).labels)
    assert data.subset(None, seed=1) is data and data.subset(500, seed=1) is data


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(cifar10.DataError, match="refusing to load builtins.print"):
        cifar10.read_cifar10_batches(folder, ["data_batch_1"])
