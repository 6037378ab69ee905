"""Scores computed at write time: tensors for the plugin, scalars and histograms for
TensorBoard's own tabs, and the ``deephys-lightning scores`` command."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, metrics, read_log
from deephys_lightning.cli import main
from deephys_lightning.scores import score_table

SCALARS = (
    "novelty_mean",
    "novelty_positive_fraction",
    "novelty_raw_mean",
    "spurious_mean",
    "spurious_undefined",
    "activation_ratio_mean",
    "dead_neurons",
)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("scores")
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    t.fit(
        TinyNet(),
        loader(random_set(12, 0)),
        val_dataloaders={
            "ind": loader(random_set(30, 1)),
            "noise": loader(random_set(20, 2)),
            "other": loader(random_set(25, 3)),
        },
    )
    return tmp_path, t.logger.log_dir


def test_logged_scores_equal_the_metrics_on_the_logged_activations(logged):
    log = read_log(logged[1])
    for step in log.steps:
        acts = {d: log.activations("fc", d, step) for d in log.datasets}
        means = {
            d: metrics.category_means(acts[d], log.labels(d, step), NUM_CLASSES)
            for d in log.datasets
        }
        for d in log.datasets:
            np.testing.assert_array_equal(log.category_means("fc", d, step), means[d])
        for ood in ("noise", "other"):
            scores = log.scores("fc", ood, step)
            ind_max = metrics.max_per_neuron(acts["ind"])
            np.testing.assert_array_equal(
                scores.novelty, metrics.novelty(means["ind"], means[ood], ind_max)
            )
            np.testing.assert_array_equal(
                scores.novelty_raw, metrics.raw_novelty(means["ind"], means[ood])
            )
            np.testing.assert_array_equal(
                scores.spurious, metrics.spurious(means["ind"], means[ood])
            )
            np.testing.assert_array_equal(
                scores.activation_ratio, metrics.activation_ratio(acts["ind"], acts[ood])
            )
    with pytest.raises(KeyError, match="in-distribution"):
        log.scores("fc", "ind", log.steps[-1])


def test_scalars_and_histograms_show_in_tensorboards_own_tabs(logged):
    log = read_log(logged[1])
    acc = event_accumulator.EventAccumulator(logged[1], size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    by_plugin = {}
    for tag in tags:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        by_plugin.setdefault(plugin, set()).add(tag)
    for ood in ("noise", "other"):
        for name in SCALARS:
            tag = f"deephys/fc/{ood}/{name}"
            assert tag in by_plugin["scalars"]
            assert [e.step for e in acc.Tensors(tag)] == list(log.steps)
        summary = log.scores("fc", ood, log.steps[-1]).summary()
        for name in SCALARS:
            value = float(acc.Tensors(f"deephys/fc/{ood}/{name}")[-1].tensor_proto.float_val[0])
            assert value == pytest.approx(summary[name], rel=1e-6, nan_ok=True)
        histograms = by_plugin.get("histograms", set())
        assert f"deephys/fc/{ood}/novelty" in histograms
        spurious = log.scores("fc", ood, log.steps[-1]).spurious
        assert (f"deephys/fc/{ood}/spurious" in histograms) == bool(np.isfinite(spurious).any())
    for dataset in ("ind", "noise", "other"):
        assert f"deephys/{dataset}/accuracy" in by_plugin["scalars"]
    # every tag belongs to one plugin: no Deephys data shares a tag with a scalar
    assert sum(len(v) for v in by_plugin.values()) == len(tags)
    assert all(t.startswith("deephys.data/") for t in by_plugin["deephys"])


def test_score_table_and_command(logged, capsys):
    rows = score_table(logged[0])
    log = read_log(logged[1])
    assert [(r.step, r.ood) for r in rows] == [
        (step, ood) for step in log.steps for ood in ("noise", "other")
    ]
    last = rows[-1]
    summary = log.scores("fc", "other", log.steps[-1]).summary()
    assert last.novelty_mean == pytest.approx(summary["novelty_mean"])
    labels, preds = log.labels("other", last.step), log.predictions("other", last.step)
    assert last.accuracy == pytest.approx(np.mean(labels == preds))

    assert main(["scores", str(logged[0])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["run", "step", "epoch", "layer", "OOD"]
    assert len(out) == 1 + len(rows)
    assert main(["scores", str(logged[0]), "--csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(parsed[-1]["novelty_mean"]) == pytest.approx(summary["novelty_mean"])


def test_scores_command_errors(tmp_path, capsys):
    assert main(["scores", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["scores", str(tmp_path)]) == 1
    assert "no Deephys scores" in capsys.readouterr().err
