"""DeephysCallback options for real models and data: layers, selectors, reductions,
subsets, thumbnails, class names, the size cap, resume, and clear errors."""

from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import torch
from event_steps import thumbnail_steps
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tiny_model import TinyNet, loader, module_output, random_set, trainer
from torch import nn
from torch.utils.data import Dataset

from deephys_lightning import DeephysCallback, metrics, read_log


def _fit(tmp_path, callback, val, *, epochs=1, model=None, **kwargs):
    t = trainer(tmp_path, [callback], max_epochs=epochs, **kwargs)
    t.fit(model or TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    return t, read_log(t.logger.log_dir if t.logger else tmp_path)


def _outputs(model, module, x):
    return module_output(model, module, x)[0]


class TupleNet(TinyNet):
    """A model whose recorded layer returns (features, tokens): like an LSTM or a ViT block."""

    def __init__(self):
        super().__init__()
        self.block = _TupleBlock()

    def forward(self, x):
        feats, tokens = self.block(self.features(x))
        return self.head(torch.relu(self.fc(feats)) + tokens.mean(dim=(1, 2))[:, None] * 0)


class _TupleBlock(nn.Module):
    def forward(self, maps):
        return maps.mean(dim=(2, 3)), maps.flatten(2).transpose(1, 2)  # (B, C), (B, T, C)


def test_several_layers_and_a_tuple_output_selector(tmp_path):
    val = {"ind": loader(random_set(9, 1)), "ood": loader(random_set(6, 2))}
    model = TupleNet()
    callback = DeephysCallback(layers=["fc", "block", "features"], output_selector={"block": 1})
    _, log = _fit(tmp_path, callback, val, model=model)
    assert log.layers == ("fc", "block", "features")
    step = log.steps[-1]
    x = random_set(6, 2).tensors[0]
    tokens = _outputs(model, model.block, x)[1]  # (B, T, C): ReLU, then mean over tokens
    np.testing.assert_allclose(
        log.activations("block", "ood", step).astype(np.float32),
        torch.relu(tokens).mean(dim=1).numpy(),
        rtol=2e-3,
        atol=1e-4,
    )
    maps = _outputs(model, model.features, x)
    np.testing.assert_allclose(
        log.activations("features", "ood", step).astype(np.float32),
        torch.relu(maps).mean(dim=(2, 3)).numpy(),
        rtol=2e-3,
        atol=1e-4,
    )
    assert log.scores("block", "ood", step).novelty.shape == (4,)


def test_a_tuple_output_without_selector_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="Pass output_selector="):
        _fit(tmp_path, DeephysCallback(layer="block"), loader(random_set(5, 1)), model=TupleNet())


def test_reduction_none_and_callable_and_relu_off(tmp_path):
    model = TinyNet()
    callback = DeephysCallback(
        layers=["features", "fc"],
        reduction=lambda out: out.amax(dim=(2, 3)) if out.ndim == 4 else out,
        relu=False,
    )
    _, log = _fit(tmp_path, callback, loader(random_set(5, 1)), model=model)
    x = random_set(5, 1).tensors[0]
    np.testing.assert_allclose(
        log.activations("features", "dataset_0", log.steps[-1]).astype(np.float32),
        _outputs(model, model.features, x).amax(dim=(2, 3)).numpy(),
        rtol=2e-3,
        atol=1e-4,
    )
    assert log.latest.relu is False
    with pytest.raises(ValueError, match="reduction='none'"):
        _fit(
            tmp_path / "b",
            DeephysCallback(layer="features", reduction="none"),
            loader(random_set(5, 1)),
        )


def test_max_images_keeps_the_same_spread_subset_every_epoch(tmp_path):
    model = TinyNet()
    callback = DeephysCallback(layer="fc", max_images=4)
    _, log = _fit(tmp_path, callback, loader(random_set(10, 1), 3), epochs=2, model=model)
    expected = np.unique(np.linspace(0, 9, 4).round().astype(int))
    for step in log.steps:
        np.testing.assert_array_equal(log.positions("dataset_0", step), expected)
    x, y = random_set(10, 1).tensors
    np.testing.assert_array_equal(log.labels("dataset_0", log.steps[-1]), y[expected].numpy())
    np.testing.assert_allclose(
        log.activations("fc", "dataset_0", log.steps[-1]).astype(np.float32),
        torch.relu(_outputs(model, model.fc, x[expected])).numpy(),
        rtol=2e-3,
        atol=1e-4,
    )
    assert log.thumbnails("dataset_0").shape[0] == 4


def test_denormalize_and_thumbnail_size(tmp_path):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.1, 0.3)
    base = random_set(4, 1)
    x = base.tensors[0]
    normalized = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    dataset = torch.utils.data.TensorDataset(normalized, base.tensors[1])
    callback = DeephysCallback(layer="fc", denormalize=(mean, std))
    _, log = _fit(tmp_path, callback, loader(dataset))
    expected = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    assert np.abs(log.thumbnails("dataset_0").astype(int) - expected).max() <= 1

    big = torch.utils.data.TensorDataset(torch.rand(3, 1, 40, 100), torch.tensor([0, 1, 2]))

    class Gray(TinyNet):
        def forward(self, x):
            return super().forward(x.expand(-1, 3, -1, -1))

    _, log = _fit(
        tmp_path / "gray",
        DeephysCallback(layer="fc", thumbnail_size=20),
        loader(big),
        model=Gray(),
    )
    assert log.thumbnails("dataset_0").shape == (3, 8, 20, 3)


class _DataModule(L.LightningDataModule):
    class_names = ("zero", "one", "two")

    def train_dataloader(self):
        return loader(random_set(12, 0))

    def val_dataloader(self):
        return loader(random_set(5, 1))


def test_class_names_come_from_the_datamodule(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t.fit(TinyNet(), datamodule=_DataModule())
    assert read_log(t.logger.log_dir).class_names == ("zero", "one", "two")


def test_max_activation_bytes_drops_only_the_full_matrix(tmp_path):
    callback = DeephysCallback(layer="fc", max_activation_bytes=0)
    val = {"ind": loader(random_set(8, 1)), "ood": loader(random_set(6, 2))}
    _, log = _fit(tmp_path, callback, val)
    step = log.steps[-1]
    with pytest.raises(KeyError, match="max_activation_bytes"):
        log.activations("fc", "ood", step)
    indices, values = log.top_images("fc", "ood", step)
    assert indices.shape == (5, 6)
    neurons, normalized = log.image_top_neurons("fc", "ood", step)
    assert neurons.shape == (6, 5) and normalized.shape == (6, 5)


def test_image_top_neurons_match_the_normalized_activations(tmp_path):
    val = {"ind": loader(random_set(8, 1)), "ood": loader(random_set(6, 2))}
    _, log = _fit(tmp_path, DeephysCallback(layer="features.0"), val)
    step = log.steps[-1]
    ind_max = metrics.max_per_neuron(log.activations("features.0", "ind", step))
    normalized = metrics.normalized_activations(log.activations("features.0", "ood", step), ind_max)
    neurons, values = log.image_top_neurons("features.0", "ood", step)
    for i in range(len(normalized)):
        row = normalized[i]
        key = [(1 if np.isnan(v) else 0, 0 if np.isnan(v) else -v, j) for j, v in enumerate(row)]
        order = [j for *_, j in sorted(key)][: neurons.shape[1]]
        assert neurons[i].tolist() == order
        np.testing.assert_array_equal(values[i], row[order])


def test_resuming_from_an_older_checkpoint_never_rewrites_a_step(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    val = loader(random_set(5, 1))
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    first = trainer(
        tmp_path,
        [DeephysCallback(layer="fc"), checkpoints],
        logger=logger,
        max_epochs=3,
        enable_checkpointing=True,
    )
    first.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    assert read_log(first.logger.log_dir).steps == (3, 6, 9)
    oldest = sorted((tmp_path / "ckpt").glob("epoch=0*.ckpt"))[0]
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    resumed = trainer(
        tmp_path,
        [DeephysCallback(layer="fc"), ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
        logger=logger,
        max_epochs=4,
        enable_checkpointing=True,
    )
    with pytest.warns(UserWarning, match="already holds this fit's record at step 9"):
        resumed.fit(
            TinyNet(), loader(random_set(12, 0)), val_dataloaders=val, ckpt_path=str(oldest)
        )
    log = read_log(resumed.logger.log_dir)
    assert log.steps == (3, 6, 9, 12)  # 6 and 9 were not written again; 12 is new
    assert thumbnail_steps(resumed.logger.log_dir, "dataset_0") == [3]


def test_a_non_tensorboard_logger_gets_a_warning_and_a_fallback(tmp_path):
    with pytest.warns(UserWarning, match="no TensorBoardLogger"):
        t = trainer(
            tmp_path, [DeephysCallback(layer="fc")], max_epochs=1, logger=CSVLogger(tmp_path)
        )
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert read_log(tmp_path).steps == (3,)


def test_non_finite_activations_are_recorded_with_a_warning(tmp_path):
    model = TinyNet()
    with torch.no_grad():
        model.fc.bias.fill_(1e6)  # beyond float16's range
    with pytest.warns(UserWarning, match="NaN or infinite"):
        t = trainer(tmp_path, [DeephysCallback(layer="fc")])
        t.validate(model, dataloaders=loader(random_set(5, 1)))
    log = read_log(t.logger.log_dir)
    assert np.isinf(log.activations("fc", "dataset_0", log.steps[-1])).any()  # kept as recorded
    # every image overflows: all are left out of the layer, counted with their cause
    assert [(r.layer, r.cause, r.images) for r in log.latest.left_out] == [("fc", "float16", 5)]


def test_ood_sets_with_fewer_classes_skip_the_missing_categories(tmp_path):
    x, y = random_set(9, 2).tensors
    only_two = torch.utils.data.TensorDataset(x, y % 2)
    val = {"ind": loader(random_set(12, 1)), "two_classes": loader(only_two)}
    _, log = _fit(tmp_path, DeephysCallback(layer="fc"), val)
    step = log.steps[-1]
    means = log.category_means("fc", "two_classes", step)
    assert np.isnan(means[2]).all() and np.isfinite(means[:2]).all()
    ind_means = log.category_means("fc", "ind", step)
    np.testing.assert_array_equal(
        log.scores("fc", "two_classes", step).spurious, metrics.spurious(ind_means, means)
    )


def test_fast_dev_run_records_when_asked(tmp_path):
    callback = DeephysCallback(layer="fc", record_fast_dev_run=True)
    t = trainer(tmp_path, [callback], fast_dev_run=True, logger=False)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))
    assert len(read_log(tmp_path).steps) == 1


def test_unpack_batch_reads_any_batch_layout(tmp_path):
    class Nested(Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return {"sample": {"pixels": x}, "meta": (y, "extra")}

    class Net(TinyNet):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self(batch["sample"]["pixels"])

    base = random_set(6, 1)
    callback = DeephysCallback(
        layer="fc", unpack_batch=lambda b: (b["sample"]["pixels"], b["meta"][0])
    )
    t = trainer(tmp_path, [callback], max_epochs=1)
    t.validate(Net(), dataloaders=loader(Nested(base)))
    log = read_log(t.logger.log_dir)
    np.testing.assert_array_equal(log.labels("dataset_0", 0), base.tensors[1].numpy())


@pytest.mark.parametrize("layout", ["packs", "events"])
@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_the_latest_step_is_complete_under_default_sampling(tmp_path, load_fast, layout):
    """Every step of a log with step packs; the latest (complete) one of a log of the
    events layout, of which TensorBoard keeps 10 records by default."""
    import requests
    from event_surgery import to_events_layout
    from tensorboard_process import running_tensorboard

    val = loader(random_set(5, 1))
    t, log = _fit(tmp_path / "fit", DeephysCallback(layer="fc"), val, epochs=14)
    assert len(log.steps) == 14
    served = tmp_path / "served"
    if layout == "events":
        to_events_layout(t.logger.log_dir, served / "run")
    else:
        shutil.copytree(t.logger.log_dir, served / "run")
    with running_tensorboard(served, load_fast=load_fast) as base:  # default sampling
        (run,) = requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"]
        steps = [s["step"] for s in run["steps"]]
        if layout == "events":
            assert len(steps) < 14  # TensorBoard sampled the older steps
        else:
            assert steps == list(log.steps)
        assert steps[-1] == log.steps[-1]
        neuron = requests.get(
            f"{base}/data/plugin/deephys/neuron",
            params={"run": run["run"], "layer": "fc", "neuron": 0},
            timeout=10,
        )
        assert neuron.status_code == 200, neuron.text
        assert neuron.json()["step"] == log.steps[-1]
        thumbnail = requests.get(
            f"{base}/data/plugin/deephys/thumbnail",
            params={"run": run["run"], "dataset": "dataset_0", "index": 4},
            timeout=10,
        )
        assert thumbnail.status_code == 200


def test_a_shuffled_validation_loader_gets_a_warning(tmp_path):
    shuffled = torch.utils.data.DataLoader(random_set(6, 1), batch_size=3, shuffle=True)
    with pytest.warns(UserWarning, match="shuffles"):
        _fit(tmp_path, DeephysCallback(layer="fc"), shuffled)


@pytest.mark.parametrize(("max_epochs", "kept"), [(5, [0, 2, 4]), (4, [0, 2, 3])])
def test_matrices_every_n_records_keeps_them_every_nth_and_at_the_last_epoch(
    tmp_path, max_epochs, kept
):
    callback = DeephysCallback(layer="fc", matrices_every_n_records=2)
    t = trainer(tmp_path, [callback], max_epochs=max_epochs)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(6, 1)))
    log = read_log(t.logger.log_dir)

    def has_matrix(step: int) -> bool:
        try:
            log.activations("fc", "dataset_0", step)
        except KeyError as error:
            assert "max_activation_bytes" in str(error)
            return False
        log.logits("dataset_0", step)  # the logits follow the matrices
        return True

    epochs = [log.record(step).epoch for step in log.steps if has_matrix(step)]
    assert epochs == kept and len(log.steps) == max_epochs
    assert log.missing() == ()  # a record without them is complete: it never listed them
    evaluation = trainer(tmp_path / "validate", [callback])
    evaluation.validate(TinyNet(), loader(random_set(6, 1)))  # validate always has them
    validated = read_log(evaluation.logger.log_dir)
    assert validated.activations("fc", "dataset_0").shape == (6, 5)


def test_matrices_every_n_records_is_checked_at_construction():
    with pytest.raises(MisconfigurationException, match="matrices_every_n_records"):
        DeephysCallback(layer="fc", matrices_every_n_records=0)
