"""examples/colored_mnist.py reproduces the paper's Colored MNIST pattern at small size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from deephys_lightning.scores import ScoreRow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "colored_mnist.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("example_colored_mnist", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


example = _load_example()


def test_the_paper_pattern_holds_at_small_size(tmp_path, capsys):
    argv = ["--logdir", str(tmp_path), "--epochs", "2", "--train-per-class", "100", "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    assert "The paper's pattern holds." in printed and "FAIL" not in printed
    rows = example.last_step_rows(str(tmp_path / "colored_mnist" / "version_0"))
    scores = {row.ood: row for row in rows}
    assert list(scores) == ["permuted", "arbitrary", "drifted"]
    # The pattern, asserted here on the logged numbers, not only on the script's verdict.
    novelty = {name: row.novelty_mean for name, row in scores.items()}
    spurious = {name: row.spurious_mean for name, row in scores.items()}
    assert novelty["arbitrary"] > max(novelty["permuted"], novelty["drifted"])
    assert spurious["permuted"] > spurious["arbitrary"] > spurious["drifted"]
    assert spurious["drifted"] < 0.1 and spurious["permuted"] > 0.5
    assert scores["drifted"].accuracy > scores["arbitrary"].accuracy > scores["permuted"].accuracy


def _row(ood: str, novelty: float, spurious: float) -> ScoreRow:
    return ScoreRow(
        run="run",
        step=10,
        epoch=1,
        layer="backbone.fc1",
        ood=ood,
        accuracy=0.5,
        novelty_mean=novelty,
        novelty_positive_fraction=0.5,
        novelty_raw_mean=novelty * 10,
        spurious_mean=spurious,
        spurious_undefined=0,
        activation_ratio_mean=0.9,
        dead_neurons=0,
    )


def test_the_check_reports_each_broken_expectation():
    rows = [_row("permuted", 3.0, 0.3), _row("arbitrary", 2.0, 0.5), _row("drifted", 0.1, 0.01)]
    failed = [e.claim for e in example.check_pattern(rows) if not e.holds]
    assert failed == [
        "novelty: arbitrary > permuted (new colours vs known ones)",
        "spurious: permuted > arbitrary (high vs medium)",
    ]
    with pytest.raises(ValueError, match="drifted"):
        example.check_pattern(rows[:2])


def test_a_data_dir_without_mnist_is_a_clear_error(tmp_path, capsys):
    assert example.main(["--data-dir", str(tmp_path), "--logdir", str(tmp_path / "logs")]) == 2
    assert "holds no MNIST copy" in capsys.readouterr().err
