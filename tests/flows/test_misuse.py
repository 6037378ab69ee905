"""Misuse and failures around the callback, with real Trainer runs: colliding or empty
names are refused before training, ignored labels are left out and counted, an empty
InD set never silently becomes another set, and a failing write does not end training."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from tiny_model import CountingNet, TinyNet, loader, random_set, trainer
from torch.utils.data import TensorDataset

from deephys_lightning import DeephysCallback, read_log

pytestmark = pytest.mark.fault  # cases of the fault suite (tests/fault_tally.py)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ((0, "0"), "'0' and '0' would be recorded under one name"),
        (("a/b", "a%2Fb"), "'a/b' and 'a%2Fb' would be recorded under one name"),
        (("", "ood"), "named '' \\(an empty dict key\\)"),
    ],
)
def test_colliding_or_empty_names_are_refused_before_training(tmp_path, keys, message):
    model = CountingNet()
    val = {keys[0]: loader(random_set(8, 1)), keys[1]: loader(random_set(8, 2))}
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.raises(MisconfigurationException, match=message):
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=val)
    assert model.trained == 0


def test_negative_labels_are_left_out_and_counted(tmp_path):
    base = random_set(12, 1)
    labels = base.tensors[1].clone()
    labels[[1, 5, 6]] = -100  # the usual ignore_index
    ind = TensorDataset(base.tensors[0], labels)
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.warns(UserWarning, match="3 images of 'ind' have a negative label"):
        t.fit(
            TinyNet(),
            loader(random_set(12, 0)),
            val_dataloaders={"ind": loader(ind), "ood": loader(random_set(8, 2))},
        )
    log = read_log(t.logger.log_dir)
    kept = [i for i in range(12) if i not in (1, 5, 6)]
    np.testing.assert_array_equal(log.positions("ind"), kept)
    np.testing.assert_array_equal(log.labels("ind"), labels[kept].numpy())


def test_an_empty_ind_set_is_refused_never_replaced(tmp_path):
    empty = TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    model = CountingNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.raises(MisconfigurationException, match="'ind' is empty"):
        t.fit(
            model,
            loader(random_set(12, 0)),
            val_dataloaders={"ind": loader(empty), "ood": loader(random_set(8, 2))},
        )
    assert model.trained == 0


def test_an_unwritable_log_directory_does_not_end_training(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=2)
    os.makedirs(t.logger.log_dir)
    with open(os.path.join(t.logger.log_dir, "plugins"), "w") as handle:
        handle.write("a file where the plugins folder should be")
    model = CountingNet()
    val = {"ind": loader(random_set(8, 1)), "ood": loader(random_set(8, 2))}
    with pytest.warns(UserWarning, match="could not be written .* Training goes on") as seen:
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=val)
    assert model.trained == 6  # both epochs trained
    failures = [w for w in seen if "could not be written" in str(w.message)]
    assert len(failures) == 1  # once per cause, not once per epoch
    strict = trainer(tmp_path, [DeephysCallback(layer="fc", strict=True)], max_epochs=1)
    os.makedirs(strict.logger.log_dir)
    with open(os.path.join(strict.logger.log_dir, "plugins"), "w") as handle:
        handle.write("x")
    with pytest.raises(OSError):
        strict.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
