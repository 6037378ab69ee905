"""DeephysCallback under a real Trainer: what is recorded, when, and clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from tiny_model import NUM_CLASSES, DictSet, TinyNet, loader, module_output, random_set, trainer

from deephys_lightning import DeephysCallback, read_log, read_runs

CLASSES = ["cat", "dog", "<b>bird</b>"]


def _hook_output(model: TinyNet, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer outputs for ``x``, by hand: ReLU, then the spatial mean."""
    out, logits = module_output(model, module, x)
    out = torch.relu(out)
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    return out, logits.argmax(-1)


@pytest.mark.parametrize("layer", ["fc", "features.0"])
def test_fit_logs_activations_equal_to_the_hook_output(tmp_path, layer):
    sets = {"ind": random_set(10, 1), "noise": random_set(7, 2), "shifted": random_set(9, 3)}
    model = TinyNet()
    callback = DeephysCallback(layer=layer, class_names=CLASSES)
    t = trainer(tmp_path, [callback], max_epochs=2)
    t.fit(
        model,
        loader(random_set(12, 0)),
        val_dataloaders={name: loader(ds) for name, ds in sets.items()},
    )
    log = read_log(t.logger.log_dir)
    assert log.datasets == ("ind", "noise", "shifted")
    assert log.layers == (layer,)
    assert log.class_names == tuple(CLASSES)
    assert log.steps == (3, 6)  # one record per epoch, none for the sanity check
    module = dict(model.named_modules())[layer]
    for name, dataset in sets.items():
        x, y = dataset.tensors
        expected, predictions = _hook_output(model, module, x)
        got = log.activations(layer, name, log.steps[-1])
        assert got.dtype == np.float16
        assert got.shape == (len(x), expected.shape[1])
        np.testing.assert_allclose(got.astype(np.float32), expected.numpy(), rtol=2e-3, atol=1e-4)
        np.testing.assert_array_equal(log.labels(name, log.steps[-1]), y.numpy())
        np.testing.assert_array_equal(log.predictions(name, log.steps[-1]), predictions.numpy())
        thumbs = log.thumbnails(name)
        assert thumbs.shape == (len(x), 8, 8, 3) and thumbs.dtype == np.uint8
        np.testing.assert_array_equal(
            thumbs, (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        )


def test_top_images_are_the_highest_activations(tmp_path):
    model = TinyNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc", top_k=4)], max_epochs=1)
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=[loader(random_set(11, 5))])
    log = read_log(t.logger.log_dir)
    step = log.steps[-1]
    acts = log.activations("fc", "dataset_0", step).astype(np.float32)
    indices, values = log.top_images("fc", "dataset_0", step)
    assert indices.shape == (acts.shape[1], 4)
    for neuron in range(acts.shape[1]):
        order = sorted(range(len(acts)), key=lambda i: (-acts[i, neuron], i))[:4]
        assert indices[neuron].tolist() == order
        np.testing.assert_array_equal(values[neuron], acts[order, neuron])


def test_ind_names_the_in_distribution_set(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", ind="clean")], max_epochs=1)
    t.fit(
        TinyNet(),
        loader(random_set(8, 0)),
        val_dataloaders={"ood": loader(random_set(5, 1)), "clean": loader(random_set(6, 2))},
    )
    log = read_log(t.logger.log_dir)
    assert log.datasets == ("clean", "ood")
    assert log.latest.num_images == {"clean": 6, "ood": 5}


def test_unnamed_loaders_and_default_class_names(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))
    log = read_log(t.logger.log_dir)
    assert log.datasets == ("dataset_0",)
    assert log.class_names == tuple(str(i) for i in range(NUM_CLASSES))


def test_every_n_epochs_records_only_those_epochs(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", every_n_epochs=2)], max_epochs=4)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    log = read_log(t.logger.log_dir)
    assert [r.epoch for r in log.records] == [1, 3]
    assert log.steps == (6, 12)


def test_dict_batches(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    base = random_set(6, 1)
    t.fit(TinyNet(), loader(DictSet(random_set(8, 0))), val_dataloaders=loader(DictSet(base)))
    log = read_log(t.logger.log_dir)
    np.testing.assert_array_equal(log.labels("dataset_0", log.steps[-1]), base.tensors[1].numpy())


def test_validate_records_without_training(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")])
    t.validate(
        TinyNet(), dataloaders={"a": loader(random_set(5, 1)), "b": loader(random_set(4, 2))}
    )
    log = read_log(t.logger.log_dir)
    assert log.steps == (0,)
    assert log.datasets == ("a", "b")


def test_a_step_is_recorded_once_per_log(tmp_path):
    """A validation at a step the run already holds goes to a run of its own beside it:
    the fit's record is never overwritten, the evaluation never dropped."""
    callback = DeephysCallback(layer="fc")
    t = trainer(tmp_path, [callback], max_epochs=1)
    model = TinyNet()
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=loader(random_set(5, 1)))
    before = read_log(t.logger.log_dir).activations("fc", "dataset_0", 3)
    t.validate(model, dataloaders=loader(random_set(5, 1)))  # same global step
    log = read_log(t.logger.log_dir, run=".")
    assert log.steps == (3,) and log.record().stage == "fit"
    np.testing.assert_array_equal(log.activations("fc", "dataset_0", 3), before)
    evaluation = read_log(os.path.join(t.logger.log_dir, "validate_step3"))
    assert evaluation.steps == (3,) and evaluation.record().stage == "validate"


def test_without_a_logger_each_run_gets_a_version_directory(tmp_path):
    """logger=False: records go to a new lightning_logs/version_N under default_root_dir
    (never the bare root), so the next run is recorded too, beside the first."""
    for version in (0, 1):
        t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=False, max_epochs=1)
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))
        log = read_log(tmp_path / "lightning_logs" / f"version_{version}")
        assert log.activations("fc", "dataset_0", log.steps[-1]).shape == (5, 5)
    assert sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0", "version_1"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith("events.out")]


def test_with_only_a_csv_logger_records_go_to_its_version_directory(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    for version in (0, 1):
        csv = CSVLogger(tmp_path / "csv")
        t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=csv, max_epochs=1)
        with pytest.warns(UserWarning, match="has no TensorBoardLogger"):
            t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))
        assert csv.log_dir.endswith(f"version_{version}")
        assert read_log(csv.log_dir).steps
    # tensorboard --logdir on the logger's root shows both runs
    runs = read_runs(tmp_path / "csv")
    assert sorted(runs) == ["lightning_logs/version_0", "lightning_logs/version_1"]


def test_sanity_check_and_fast_dev_run_record_nothing(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], fast_dev_run=True, logger=False)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))
    with pytest.raises(ValueError, match="0 runs"):
        read_log(tmp_path)


def test_wrong_layer_name_lists_the_closest_modules(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="featurs.0")], max_epochs=1)
    with pytest.raises(MisconfigurationException, match=r"Closest module names: features\.0"):
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(5, 1)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": ""}, "dotted module names"),
        ({}, "exactly one of"),
        ({"layer": "fc", "layers": ["fc"]}, "exactly one of"),
        ({"layers": ["fc", "fc"]}, "repeats"),
        ({"layer": "fc", "reduction": "max"}, "reduction"),
        ({"layer": "fc", "max_images": 0}, "max_images"),
        ({"layer": "fc", "denormalize": (0.5,)}, "denormalize"),
        ({"layer": "fc", "output_selector": {"other": 0}}, "not recorded"),
        ({"layer": "fc", "every_n_epochs": 0}, "every_n_epochs"),
        ({"layer": "fc", "top_k": 0}, "top_k"),
        ({"layer": "fc", "class_names": "abc"}, "list of strings"),
        ({"layer": "fc", "class_names": []}, "empty"),
        ({"layer": "fc", "thumbnail_size": 2}, "thumbnail_size"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        DeephysCallback(**kwargs)


def test_too_few_class_names_is_a_clear_error(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", class_names=["a"])], max_epochs=1)
    with pytest.raises(MisconfigurationException, match="one name per class"):
        t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=loader(random_set(9, 1)))


def test_batches_without_labels_are_a_clear_error(tmp_path):
    class Unlabeled(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (torch.rand(3, 8, 8),)

    class Net(TinyNet):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self(batch[0])

    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.raises(ValueError, match="needs labels"):
        t.fit(Net(), loader(random_set(8, 0)), val_dataloaders=loader(Unlabeled()))


def test_state_dict_round_trip():
    callback = DeephysCallback(layer="fc")
    state = {
        "written": {
            "/logs/version_0": {
                "last_step": 7,
                "thumbnails": {"a": "f00d"},
                "steps": {"3": "fit", "7": "validate"},
                "legacy_until": -1,
            }
        }
    }
    callback.load_state_dict(state)
    assert callback.state_dict() == state
    # a checkpoint of the previous release: its steps up to the last count as held
    callback.load_state_dict({"written": {"/logs/v": {"last_step": 7, "thumbnails": {}}}})
    assert callback.state_dict()["written"]["/logs/v"]["legacy_until"] == 7
    assert callback.state_key != DeephysCallback(layer="other").state_key


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_outputs_are_recorded_as_their_float16_rounding(tmp_path, precision):
    if precision == "16-mixed" and not torch.cuda.is_available():
        pytest.skip("16-mixed autocast needs CUDA; bf16-mixed runs on the CPU")
    model = TinyNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], precision=precision)
    data = random_set(8, 3)
    t.validate(model, dataloaders=loader(data))
    recorded = read_log(t.logger.log_dir).activations("fc", "dataset_0")
    device = "cuda" if precision == "16-mixed" else "cpu"
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    model = model.to(device)
    with torch.autocast(device, dtype=dtype):
        output, _ = module_output(model, model.fc, data.tensors[0].to(device))
    expected = torch.relu(output.float()).half().cpu().numpy()
    np.testing.assert_array_equal(recorded, expected)
