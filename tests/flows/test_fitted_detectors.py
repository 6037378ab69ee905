"""The OOD detectors on features are fitted on a set they never score: the callback's
reference set, or one half of the InD set; the head detectors find the linear head
or say why there is none. Each row's numbers are recomputed here from the recorded
activations (and, for the reference set, the model run by hand) with scikit-learn and
pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from pytorch_ood.detector import ViM
from sklearn.metrics import roc_auc_score
from tiny_model import TinyNet, loader, module_output, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.detection import split_half
from deephys_lightning.head_detectors import vim_default_dim

DETECTORS = ["msp", "knn", "mahalanobis", "react", "vim", "fdbd", "gen"]


def _fit(tmp_path, **options):
    torch.manual_seed(0)
    val = {"ind": loader(random_set(40, 1)), "ood": loader(random_set(30, 2))}
    callback = DeephysCallback(layer="fc", ood_detectors=DETECTORS, **options)
    t = trainer(tmp_path, [callback], max_epochs=1)
    model = TinyNet()
    t.fit(model, loader(random_set(24, 0)), val_dataloaders=val)
    return model, read_log(t.logger.log_dir)


def _auroc(ind: np.ndarray, ood: np.ndarray) -> float:
    is_ind = np.r_[np.ones(len(ind)), np.zeros(len(ood))]
    return roc_auc_score(is_ind, np.r_[ind, ood])


def _knn(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    bank, queries = unit(bank.astype(np.float64)), unit(queries.astype(np.float64))
    distances = np.linalg.norm(queries[:, None] - bank[None], axis=2)
    return -np.sort(distances, axis=1)[:, min(k, len(bank)) - 1]


def test_without_a_reference_one_half_of_ind_fits_and_the_other_is_scored(tmp_path):
    _, log = _fit(tmp_path)
    step = log.latest.step
    rows = {row.detector: row for row in log.detection("ood", step)}
    assert set(rows) == set(DETECTORS)
    ind = log.activations("fc", "ind", step)
    fit, scored = split_half(len(ind))
    for name in ("knn", "mahalanobis", "react", "vim", "fdbd"):
        assert (rows[name].fitted_on, rows[name].fit_images) == ("ind_half", len(fit))
        assert rows[name].ind_images == len(scored), name
    assert rows["msp"].fitted_on == "" and rows["msp"].ind_images == len(ind)
    ood = log.activations("fc", "ood", step)
    expected = _auroc(_knn(ind[fit], ind[scored], 50), _knn(ind[fit], ood, 50))
    assert rows["knn"].auroc == pytest.approx(expected, abs=1e-6)


def test_a_reference_set_fits_them_and_every_ind_image_is_scored(tmp_path):
    reference = random_set(32, 7)
    model, log = _fit(tmp_path, reference=loader(reference))
    step = log.latest.step
    rows = {row.detector: row for row in log.detection("ood", step)}
    for name in ("knn", "mahalanobis", "react", "vim", "fdbd"):
        assert (rows[name].fitted_on, rows[name].fit_images) == ("reference", 32), name
        assert rows[name].ind_images == 40 and rows[name].note == ""
    # the reference features, by hand: the recorded layer is relu(fc), the head's input
    x = reference.tensors[0]
    fc, _ = module_output(model, model.fc, x)
    features = torch.relu(fc).half().float()
    ind = torch.from_numpy(log.activations("fc", "ind", step)).float()
    ood = torch.from_numpy(log.activations("fc", "ood", step)).float()
    vim = ViM(None, d=vim_default_dim(5), w=model.head.weight, b=model.head.bias)
    vim.fit_features(features, torch.zeros(len(features), dtype=torch.long))
    expected = _auroc(-vim.predict_features(ind).numpy(), -vim.predict_features(ood).numpy())
    assert rows["vim"].auroc == pytest.approx(expected, abs=1e-6)
    expected = _auroc(
        _knn(features.numpy(), ind.numpy(), 50), _knn(features.numpy(), ood.numpy(), 50)
    )
    assert rows["knn"].auroc == pytest.approx(expected, abs=1e-6)


def test_a_layer_that_feeds_no_linear_head_says_why(tmp_path):
    torch.manual_seed(0)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    callback = DeephysCallback(layer="features.0", ood_detectors=["react", "knn"])
    t = trainer(tmp_path, [callback], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    rows = {row.detector: row for row in log.detection("ood", log.latest.step)}
    assert np.isnan(rows["react"].auroc)
    assert "feeds no linear head" in rows["react"].note
    assert "'head': it takes 5 inputs, the layer has 4 neurons" in rows["react"].note
    assert np.isfinite(rows["knn"].auroc) and rows["knn"].note == ""


def test_a_reference_without_fitted_detectors_is_refused_at_once():
    with pytest.raises(MisconfigurationException, match="has none of them"):
        DeephysCallback(layer="fc", reference=loader(random_set(4, 0)))
    with pytest.raises(MisconfigurationException, match="takes a dataloader"):
        DeephysCallback(layer="fc", reference="train", ood_detectors=["knn"])
