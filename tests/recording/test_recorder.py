"""The epoch recorder's batch checks: every batch layout gets the same ones."""

from __future__ import annotations

import pytest
import torch
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback
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
