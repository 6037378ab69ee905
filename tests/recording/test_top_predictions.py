"""Each recorded image's top predictions: its most probable classes and their softmax
probabilities, written per dataset at every recorded step, also without the logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from event_surgery import rewrite_events, sink_without, tamper
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tiny_model import TinyNet, loader, module_output, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.recording.capture import top_predictions
from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
from tensorboard_plugin_deephys.log import metadata
from tensorboard_plugin_deephys.log.metadata import Kind, Record

NEW_KINDS = {Kind.TOP_CLASSES, Kind.TOP_PROBABILITIES}


class SevenClassNet(TinyNet):
    """TinyNet with a seven-way head: more classes than the five predictions kept."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, 7)


def _reference(logits, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow reference: a float64 softmax and a stable sort of each row (equal
    probabilities keep the lower class first)."""
    probabilities = torch.softmax(torch.as_tensor(logits).to(torch.float64), dim=1)
    values, classes = torch.sort(probabilities, dim=1, descending=True, stable=True)
    return classes[:, :k].numpy(), values[:, :k].numpy()


@pytest.mark.parametrize(("net", "k"), [(TinyNet, 3), (SevenClassNet, 5)], ids=["C=3", "C=7"])
def test_top_predictions_are_the_most_probable_classes_without_the_logits(tmp_path, net, k):
    torch.manual_seed(0)
    model = net()
    sets = {"ind": random_set(10, 1), "ood": random_set(7, 2)}
    t = trainer(tmp_path, [DeephysCallback(layer="fc", record_logits=False)])
    t.validate(model, dataloaders={name: loader(data) for name, data in sets.items()})
    log = read_log(t.logger.log_dir)
    with pytest.raises(KeyError, match="record_logits"):
        log.logits("ind")  # not written: the top predictions are, always
    for name, data in sets.items():
        classes, probabilities = log.top_predictions(name)
        assert classes.dtype == np.int32 and probabilities.dtype == np.float32
        assert classes.shape == probabilities.shape == (len(data), k)  # k = min(5, C)
        _, logits = module_output(model, model.head, data.tensors[0])
        expected_classes, expected = _reference(logits, k)
        np.testing.assert_array_equal(classes, expected_classes)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(classes[:, 0], log.predictions(name))


def test_top_predictions_follow_the_logged_logits_at_every_step(tmp_path):
    torch.manual_seed(1)
    callback = DeephysCallback(layer="fc", record_logits=True, max_images=6)
    t = trainer(tmp_path, [callback], max_epochs=2)
    t.fit(
        SevenClassNet(),
        loader(random_set(12, 0)),
        val_dataloaders={"ind": loader(random_set(10, 1)), "ood": loader(random_set(9, 2))},
    )
    log = read_log(t.logger.log_dir)
    assert len(log.steps) == 2
    for step in log.steps:
        for name in log.datasets:
            classes, probabilities = log.top_predictions(name, step)
            assert len(classes) == 6  # the rows follow the max_images subset
            expected_classes, expected = _reference(log.logits(name, step), 5)
            np.testing.assert_array_equal(classes, expected_classes)
            np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)


def test_bf16_mixed_logits_are_upcast_before_the_softmax(tmp_path):
    torch.manual_seed(2)
    model = SevenClassNet()
    data = random_set(12, 3)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], precision="bf16-mixed")
    t.validate(model, dataloaders=loader(data))
    classes, probabilities = read_log(t.logger.log_dir).top_predictions("dataset_0")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, logits = module_output(model, model.head, data.tensors[0])
    assert logits.dtype == torch.bfloat16
    # the bfloat16 logits, softmax in float32: equal logits are frequent, lower class first
    expected_classes, expected = _reference(logits.float(), 5)
    np.testing.assert_array_equal(classes, expected_classes)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)
    # and within bfloat16's precision of the float32 model's
    _, exact = module_output(model, model.head, data.tensors[0])
    np.testing.assert_allclose(probabilities, _reference(exact, 5)[1], atol=1e-2)


def test_equal_probabilities_rank_the_lower_class_first(tmp_path):
    model = SevenClassNet()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1, 1, 0, 1, 0, 0]))
    t = trainer(tmp_path, [DeephysCallback(layer="fc")])
    t.validate(model, dataloaders=loader(random_set(6, 4)))
    classes, probabilities = read_log(t.logger.log_dir).top_predictions("dataset_0")
    assert classes.tolist() == [[1, 2, 4, 0, 3]] * 6
    e = np.e
    np.testing.assert_allclose(probabilities[0], np.array([e, e, e, 1, 1]) / (3 * e + 4), rtol=1e-6)


def test_top_predictions_equal_a_stable_sort_also_with_ties_nan_and_signed_zeros():
    rows = torch.randn(64, 40).mul(2).round()  # many equal logits
    rows[0, 5], rows[0, 6] = -0.0, 0.0  # one value
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        classes, probabilities = top_predictions(rows.to(dtype), k=5)
        expected_classes, expected = _reference(rows.to(dtype).float(), 5)
        assert classes.dtype == torch.int32 and probabilities.dtype == torch.float32
        np.testing.assert_array_equal(classes.numpy(), expected_classes)
        np.testing.assert_allclose(probabilities.numpy(), expected, rtol=1e-6)
    nan = torch.tensor([[1.0, float("nan"), 3.0, float("nan")]])
    classes, probabilities = top_predictions(nan, k=5)
    assert classes.tolist() == [[1, 3, 2, 0]] and torch.isnan(probabilities).all()
    assert top_predictions(torch.tensor([2.0, -1.0]), k=5)[0].tolist() == [[0], [0]]  # [B]
    assert top_predictions(torch.zeros(3, 0), k=5)[0].shape == (3, 0)


def _record(**kwargs) -> Record:
    return Record(
        step=4,
        epoch=0,
        layers=("fc",),
        datasets=("ind", "ood"),
        class_names=tuple("abcdefg"),
        num_images={"ind": 12, "ood": 8},
        top_k=3,
        **kwargs,
    )


def _recordings(seed: int = 0, **fields) -> dict[str, DatasetRecording]:
    rng = np.random.default_rng(seed)
    return {
        name: DatasetRecording(
            labels=rng.integers(0, 7, n),
            predictions=rng.integers(0, 7, n),
            activations={"fc": np.maximum(rng.normal(size=(n, 4)), 0).astype(np.float16)},
            **{key: value(n) for key, value in fields.items()},
        )
        for name, n in (("ind", 12), ("ood", 8))
    }


def test_the_writer_computes_them_from_logits_and_writes_them_as_dataset_tensors(tmp_path):
    rng = np.random.default_rng(5)
    recordings = _recordings(logits=lambda n: rng.normal(size=(n, 7)).astype(np.float32))
    sink = EventFileSink(EventFileWriter(str(tmp_path)))
    write_record(sink, _record(), recordings, log_dir=str(tmp_path))
    sink.close()
    log = read_log(tmp_path)
    tags = set(log.record().arrays)
    for name, recording in recordings.items():
        classes, probabilities = log.top_predictions(name)
        expected_classes, expected = _reference(recording.logits, 5)
        np.testing.assert_array_equal(classes, expected_classes)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
        for kind in NEW_KINDS:
            assert metadata.tag_name(kind, dataset=name) in tags
            assert f"deephys.data/{name}/{kind.value}" == metadata.tag_name(kind, dataset=name)
            assert kind not in metadata.BLOB_KINDS and kind not in metadata.LAYER_KINDS
    # without logits or top predictions there is nothing to write; one alone is a mistake
    sink = EventFileSink(EventFileWriter(str(tmp_path / "none")))
    write_record(sink, _record(), _recordings(), log_dir=str(tmp_path / "none"))
    sink.close()
    with pytest.raises(KeyError, match="record again"):
        read_log(tmp_path / "none").top_predictions("ind")
    half = _recordings(top_classes=lambda n: np.zeros((n, 5), np.int32))
    with pytest.raises(ValueError, match="go together"):
        write_record(sink, _record(), half, log_dir=str(tmp_path / "none"))


OlderLogSink = sink_without(NEW_KINDS)


def test_logs_written_before_the_top_predictions_still_open(tmp_path):
    rng = np.random.default_rng(6)
    recordings = _recordings(logits=lambda n: rng.normal(size=(n, 7)).astype(np.float32))
    sink = OlderLogSink(EventFileWriter(str(tmp_path)))
    write_record(sink, _record(), recordings, log_dir=str(tmp_path), layout="events")
    sink.close()
    log = read_log(tmp_path)
    assert log.missing() == ()  # a complete record of its time
    np.testing.assert_array_equal(log.labels("ood"), recordings["ood"].labels)
    assert log.at().optional_array(Kind.TOP_CLASSES, dataset="ood") is None
    assert log.at().optional_array(Kind.TOP_PROBABILITIES, dataset="ood") is None
    with pytest.raises(KeyError, match="record again"):
        log.top_predictions("ood")


def test_damaged_top_classes_are_refused_on_read(tmp_path):
    rng = np.random.default_rng(7)
    recordings = _recordings(logits=lambda n: rng.normal(size=(n, 7)).astype(np.float32))
    sink = EventFileSink(EventFileWriter(str(tmp_path / "run")))
    write_record(sink, _record(), recordings, log_dir=str(tmp_path / "run"))
    sink.close()
    tag = metadata.tag_name(Kind.TOP_CLASSES, dataset="ood")
    rewrite_events(tmp_path / "run", tmp_path / "bad", tamper(tag, 4, lambda a: a + 7))
    log = read_log(tmp_path / "bad")
    with pytest.raises(KeyError, match="damaged"):
        log.top_predictions("ood")
    assert log.at().optional_array(Kind.TOP_CLASSES, dataset="ood") is None
    assert log.top_predictions("ind")[0].shape == (12, 5)  # the other set is intact
