"""The epoch recorder's batch checks: every batch layout gets the same ones."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.recording.capture import batch_inputs


def test_unpack_batch_gets_the_checks_of_the_other_layouts():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        batch_inputs(None, unpack_batch=lambda b: (x, torch.tensor([0.5, 1.0])))
    with pytest.raises(TypeError, match="batch inputs must be a tensor"):
        batch_inputs(None, unpack_batch=lambda b: ("pixels", [0, 1]))
    inputs, labels = batch_inputs(None, unpack_batch=lambda b: (x, [0, 1]))
    assert inputs is x and labels.tolist() == [0, 1]


def test_float_labels_from_unpack_batch_stop_the_sanity_check(tmp_path):
    """Before, unpack_batch's labels were taken as they came: float labels reached the
    record. Now the sanity check refuses them, before the first training batch."""
    callback = DeephysCallback(layer="fc", unpack_batch=lambda b: (b[0], b[1].float() + 0.5))
    t = trainer(tmp_path, [callback], max_epochs=1)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(4, 1)))


def _labelled(labels, seed=1):
    base = random_set(len(labels), seed)
    return torch.utils.data.TensorDataset(base.tensors[0], torch.tensor(labels))


def test_a_label_beyond_the_models_outputs_stops_the_sanity_check(tmp_path):
    """Without class names the classes are the model's outputs (TinyNet: 3)."""
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    val = loader(_labelled([0, 1, 7, 2]))
    with pytest.raises(MisconfigurationException, match="has label 7, but the model outputs 3"):
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)


def test_a_huge_label_is_left_out_and_counted_never_allocated(tmp_path):
    """A label of 2**40 in a batch the sanity check does not see: before, the record
    sized its class tables by it and the kernel killed the training for memory."""
    callback = DeephysCallback(layer="fc")
    t = trainer(tmp_path, [callback], max_epochs=1, num_sanity_val_steps=1)
    val = loader(_labelled([0, 1, 2, 0, 1, 2**40, 2, 9]))  # the second batch
    with pytest.warns(UserWarning, match="2 images with labels up to 1099511627776") as seen:
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    assert any("left out of the record" in str(w.message) for w in seen)
    log = read_log(t.logger.log_dir)
    assert log.record().class_names == ("0", "1", "2")
    assert log.labels("dataset_0", log.steps[-1]).tolist() == [0, 1, 2, 0, 1, 2]
    with_names = DeephysCallback(layer="fc", class_names=[str(i) for i in range(10)])
    named = trainer(tmp_path / "named", [with_names], max_epochs=1, num_sanity_val_steps=1)
    val = loader(_labelled([0, 1, 2, 0, 1, 2, 2, 9]))
    named.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    labels = read_log(named.logger.log_dir).labels("dataset_0")
    assert labels.tolist()[-1] == 9  # with names, labels beyond the outputs are recorded
