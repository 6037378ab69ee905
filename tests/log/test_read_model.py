"""One read model and one implementation of each derived number, on real logs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import summary_pb2
from tensorboard.errors import NotFoundError
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, metrics, read_log
from deephys_lightning.scores import ScoreRow, score_table
from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log import derived, metadata
from tensorboard_plugin_deephys.log.metadata import Kind, Record

LAYER = "fc"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A real two-epoch fit with one InD and two OOD sets, every matrix written."""
    root = tmp_path_factory.mktemp("read_model")
    torch.manual_seed(0)  # the same model whatever ran before (not every one has live neurons)
    callback = DeephysCallback(layer=LAYER, max_activation_bytes=None, thumbnails=True)
    t = trainer(root, [callback], max_epochs=2)
    val = {
        "ind": loader(random_set(30, 1)),
        "noise": loader(random_set(20, 2)),
        "other": loader(random_set(25, 3)),
    }
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    return root, t.logger.log_dir


def test_read_log_imports_neither_torch_nor_lightning(fitted):
    code = (
        "import sys\n"
        "from deephys_lightning import read_log\n"
        f"log = read_log({fitted[1]!r})\n"
        "log.scores('fc', 'noise').summary(); log.thumbnails('ind')\n"
        "heavy = ('torch', 'lightning', 'pytorch_lightning')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_stored_maxima_are_the_recorded_maxima(fitted):
    log = read_log(fitted[1])
    for dataset in log.datasets:
        acts = log.activations(LAYER, dataset)
        np.testing.assert_array_equal(log.maxima(LAYER, dataset), metrics.max_per_neuron(acts))
    # the InD maxima normalize what every view shows
    data = log.at()
    ind_max = log.maxima(LAYER, "ind")
    alive = np.where(ind_max > 0, ind_max, np.nan)
    neurons, normalized = log.image_top_neurons(LAYER, "noise")
    acts = log.activations(LAYER, "noise").astype(np.float32)
    expected = np.take_along_axis(acts, neurons.astype(np.int64), axis=1) / alive[neurons]
    np.testing.assert_allclose(normalized, expected, rtol=1e-6, equal_nan=True)
    assert np.isfinite(alive).any(), "the fixture's model should have a live neuron"
    neuron = int(np.nanargmax(alive))
    top = data.top_images(LAYER, "noise", neuron=neuron, k=3)
    np.testing.assert_allclose(top.normalized, top.activations / alive[neuron], rtol=1e-6)


def test_accessors_default_to_the_latest_step_and_name_what_exists(fitted):
    log = read_log(fitted[1])
    assert len(log.steps) == 2
    np.testing.assert_array_equal(log.labels("noise"), log.labels("noise", log.steps[-1]))
    assert log.record() == log.latest
    assert repr(log).startswith(f"DeephysLog(run='.', steps={list(log.steps)}")
    with pytest.raises(KeyError, match=r"layer 'fc2' was not recorded.*layers: \['fc'\]") as info:
        log.activations("fc2", "noise")
    assert "max_activation_bytes" not in str(info.value)
    with pytest.raises(KeyError, match=r"dataset 'nois' was not recorded.*'noise'"):
        log.logits("nois")
    with pytest.raises(KeyError, match=r"no Deephys record at step 7; steps"):
        log.labels("noise", 7)


def test_one_score_summary_for_scalars_table_and_reader(fitted):
    root, run_dir = fitted
    log = read_log(run_dir)
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    rows = {(r.step, r.ood): r for r in score_table(root)}
    summary_names = list(log.scores(LAYER, "noise").summary())
    fields = [f.name for f in dataclasses.fields(ScoreRow)]
    assert fields[6:-2] == summary_names and fields[-2:] == ["stage", "left_out"]
    for step in log.steps:
        for ood in ("noise", "other"):
            summary = log.scores(LAYER, ood, step).summary()
            row = rows[(step, ood)]
            for name, value in summary.items():
                assert getattr(row, name) == pytest.approx(value, nan_ok=True)
                logged = [
                    e.tensor_proto.float_val[0]
                    for e in acc.Tensors(metadata.scalar_tag(name, layer=LAYER, dataset=ood))
                    if e.step == step
                ]
                assert logged == [pytest.approx(value, rel=1e-6, nan_ok=True)]
            labels, preds = log.labels(ood, step), log.predictions(ood, step)
            assert row.accuracy == pytest.approx(np.mean(labels == preds))


def test_steps_without_stored_maxima_still_read(tmp_path):
    """Steps written before the ``maxima`` kind (an old run resumed by this version):
    the InD maximum is the first top value there, the stored one after."""

    class DropMaxima(EventFileSink):
        def add_summary(self, summary, step):
            kept = [
                value
                for value in summary.value
                if getattr(
                    metadata.parse_plugin_content(value.metadata.plugin_data.content), "kind", None
                )
                is not Kind.MAXIMA
            ]
            if kept:
                super().add_summary(summary_pb2.Summary(value=kept), step)

    rng = np.random.default_rng(0)
    recordings = {}
    for step, sink_type in ((3, DropMaxima), (6, EventFileSink)):
        record = Record(
            step=step,
            epoch=step // 3 - 1,
            layers=(LAYER,),
            datasets=("ind", "ood"),
            class_names=("a", "b"),
            num_images={"ind": 20, "ood": 10},
            top_k=4,
        )
        recordings[step] = {
            name: DatasetRecording(
                labels=rng.integers(0, 2, n),
                predictions=rng.integers(0, 2, n),
                activations={LAYER: np.maximum(rng.normal(size=(n, 6)), 0).astype(np.float16)},
            )
            for name, n in (("ind", 20), ("ood", 10))
        }
        sink = sink_type(EventFileWriter(str(tmp_path)))
        layout = "events" if sink_type is DropMaxima else "packs"  # an old run, resumed
        write_record(sink, record, recordings[step], log_dir=str(tmp_path), layout=layout)
        sink.close()
    log = read_log(tmp_path)
    assert log.steps == (3, 6)
    for step in log.steps:
        expected = metrics.max_per_neuron(recordings[step]["ind"].activations[LAYER])
        np.testing.assert_array_equal(log.maxima(LAYER, "ind", step), expected)
        top = log.at(step).top_images(LAYER, "ood", neuron=0, k=2)
        np.testing.assert_allclose(top.normalized, top.activations / expected[0], rtol=1e-6)


class OldWriterSink(EventFileSink):
    """Writes what a callback of the previous release wrote: no maxima, no confusion
    sets in either direction, no detection rows, no top predictions, a record without
    ``set_means``."""

    NEW_KINDS = {
        Kind.MAXIMA,
        Kind.CONFUSIONS,
        Kind.CONFUSION_TOP_NEURONS,
        Kind.CONFUSION_TOP_MEANS,
        Kind.DETECTION,
        Kind.TOP_CLASSES,
        Kind.TOP_PROBABILITIES,
    }

    def add_summary(self, summary, step):
        kept = [value for value in summary.value if self._kept(value)]
        if kept:
            super().add_summary(summary_pb2.Summary(value=kept), step)

    def _kept(self, value) -> bool:
        if value.tag.startswith("deephys/") and (
            "/dead_neurons" in value.tag or "novelty_raw" in value.tag or "/msp/" in value.tag
        ):
            return False
        content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
        if content is not None and content.kind in self.NEW_KINDS:
            return False
        if content is not None and content.kind is Kind.RECORD:
            raw = json.loads(value.tensor.string_val[0])
            del raw["set_means"]
            value.tensor.string_val[0] = json.dumps(raw).encode()
        return True


def test_logs_of_the_previous_release_still_open(tmp_path):
    rng = np.random.default_rng(4)
    record = Record(
        step=5,
        epoch=0,
        layers=(LAYER,),
        datasets=("ind", "ood"),
        class_names=("a", "b", "c"),
        num_images={"ind": 60, "ood": 40},
        top_k=4,
    )
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 3, n),
            predictions=rng.integers(0, 3, n),
            activations={
                LAYER: (np.maximum(rng.normal(size=(n, 8)), 0) * rng.uniform(0.1, 30, 8)).astype(
                    np.float16
                )
            },
            logits=rng.normal(size=(n, 3)).astype(np.float32),
        )
        for name, n in (("ind", 60), ("ood", 40))
    }
    recordings["ind"].activations[LAYER][:, 7] = 0  # a dead neuron
    sink = OldWriterSink(EventFileWriter(str(tmp_path)))
    write_record(
        sink, record, recordings, log_dir=str(tmp_path), detectors=("msp",), layout="events"
    )
    sink.close()
    log = read_log(tmp_path)
    assert log.record().set_means == "raw"
    # the normalized novelty is derived from the stored raw one: the authors' formula
    acts = {name: r.activations[LAYER].astype(np.float32) for name, r in recordings.items()}
    ind_max = acts["ind"].max(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = {name: a / ind_max for name, a in acts.items()}
    means = {
        name: np.array([norm[name][recordings[name].labels == c].mean(0) for c in range(3)])
        for name in acts
    }
    expected = means["ind"].max(0) - means["ood"].max(0)
    scores = log.scores(LAYER, "ood")
    np.testing.assert_allclose(scores.novelty[:7], expected[:7], rtol=1e-4, atol=1e-6)
    assert np.isnan(scores.novelty[7]) and scores.summary()["dead_neurons"] == 1
    # what the old log lacks is said, not made up
    assert log.detection("ood") == []
    data = log.at()
    label, pred = (int(v) for v in data.array(Kind.PAIRS, LAYER, "ood")[0])
    assert data.pair_top_neurons(LAYER, "ood", label, pred).normalized is False
    other = next(
        (int(x), int(y))
        for x, y in zip(recordings["ood"].labels, recordings["ood"].predictions, strict=True)
        if x != y
    )
    with pytest.raises(NotFoundError, match="written before confusion sets in either direction"):
        data.pair_top_neurons(LAYER, "ood", *other, either=True)
    assert data.category_top_neurons(LAYER, "ood", 0).normalized is True
    assert data.has_either_confusions(LAYER, "ood") is False
    # no top predictions: none made up, and mistakes come in dataset order
    assert data.top_predictions("ood", 0) is None
    mistakes = data.mistakes("ood", 1)
    assert mistakes.confidence is None
    labels, predictions = recordings["ood"].labels, recordings["ood"].predictions
    expected = np.flatnonzero((predictions == 1) & (labels != 1))
    np.testing.assert_array_equal(mistakes.false_positives, expected)


# -- the ranking rule: one definition, the fast torch kernels agree with it --------------

TIES_AND_NAN = st.sampled_from([0.0, 1.0, 2.0, -1.0, np.nan, np.inf, -np.inf])


@settings(max_examples=80, deadline=None)
@given(
    values=hnp.arrays(np.float32, st.integers(1, 40), elements=TIES_AND_NAN), n=st.integers(1, 8)
)
def test_descending_order_is_the_rule_of_every_top_list(values, n):
    expected = sorted(
        range(len(values)),
        key=lambda i: (
            np.isnan(values[i]),
            -np.float64(values[i]) if not np.isnan(values[i]) else 0,
            i,
        ),
    )[:n]
    assert derived.descending_order(values, n).tolist() == expected
    # top images per neuron (a column) and top neurons per image (a row) follow it
    assert metrics.top_k(values[:, None], n)[0][0].tolist() == expected
    finite = np.nan_to_num(values, nan=0.0, posinf=3.0, neginf=-2.0) + 1.0
    ones = np.ones(len(values), np.float32)
    top, _ = metrics.top_neurons(finite[None, :], ones, n)
    assert top[0].tolist() == derived.descending_order(finite, n).tolist()


def test_category_top_neurons_follow_the_rule(fitted):
    data = read_log(fitted[1]).at()
    # ranked by the mean normalized activation: the raw means over the InD maxima
    means = derived.normalize(data.category_means(LAYER, "noise"), data.ind_max(LAYER))
    for label in range(means.shape[0]):
        top = data.category_top_neurons(LAYER, "noise", label)
        assert top.neurons.tolist() == derived.descending_order(means[label], 16).tolist()
        np.testing.assert_array_equal(top.values, means[label][top.neurons])


def test_normalization_and_confusion_have_one_implementation():
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(30, 5)).astype(np.float32)
    ind_max = np.array([1.0, 0.0, -2.0, 4.0, np.nan], np.float32)
    expected = acts / np.where(ind_max > 0, ind_max, np.nan)
    for got in (
        derived.normalize(acts, ind_max),
        metrics.normalized_activations(acts, ind_max),
        metrics.normalized_activations(torch.from_numpy(acts), ind_max),
    ):
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    labels, preds = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    loop = np.zeros((4, 4), np.int64)
    for a, b in zip(labels, preds, strict=True):
        loop[a, b] += 1
    np.testing.assert_array_equal(derived.confusion_matrix(labels, preds, 4), loop)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(torch.from_numpy(labels), preds, 4), loop
    )
    with pytest.raises(ValueError, match="same length"):
        derived.confusion_matrix(labels, preds[:-1], 4)


def test_writer_and_readers_share_one_log_format():
    """No module but tensorboard_plugin_deephys.log.metadata spells out the format's names and
    paths."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spelled = []
    for package in ("deephys_lightning", "tensorboard_plugin_deephys"):
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith(
                    os.path.join("tensorboard_plugin_deephys", "log", "metadata.py")
                ):
                    continue
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
                for literal in ('"state.json"', '"plugins"', '"deephys.data', '"thumbnails/'):
                    if literal in text:
                        spelled.append((os.path.relpath(path, root), literal))
    assert spelled == []


class NewerWriterSink(EventFileSink):
    """Writes what a newer callback might: its record lists a tag of a kind this
    reader does not know (whose values an older reader cannot parse)."""

    def add_summary(self, summary, step):
        for value in summary.value:
            content = metadata.parse_plugin_content(value.metadata.plugin_data.content)
            if content is not None and content.kind is Kind.RECORD:
                raw = json.loads(value.tensor.string_val[0])
                raw["arrays"].append("deephys.data/ind/a_later_kind")
                value.tensor.string_val[0] = json.dumps(raw).encode()
        super().add_summary(summary, step)


def test_a_record_listing_kinds_of_a_newer_callback_is_not_incomplete(tmp_path):
    rng = np.random.default_rng(5)
    record = Record(
        step=2,
        epoch=0,
        layers=(LAYER,),
        datasets=("ind", "ood"),
        class_names=("a", "b"),
        num_images={"ind": 8, "ood": 8},
        top_k=2,
    )
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 2, 8),
            predictions=rng.integers(0, 2, 8),
            activations={LAYER: rng.uniform(0, 1, (8, 3)).astype(np.float16)},
        )
        for name in ("ind", "ood")
    }
    sink = NewerWriterSink(EventFileWriter(str(tmp_path)))
    write_record(sink, record, recordings, log_dir=str(tmp_path), layout="events")
    sink.close()
    log = read_log(tmp_path)
    assert "deephys.data/ind/a_later_kind" in log.record(2).arrays
    assert log.missing(2) == ()
