"""Every way researchers evaluate, with real Trainer runs: errors before the first
training batch, trainer.test, checkpoints at their own step, compiled submodules, the
messages that name the real cause, and the frictions (names, warnings, switches)."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator
from tiny_model import CountingNet, TinyNet, loader, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import ExportError, export_step


class BypassesForward(CountingNet):
    """validation_step runs the submodules itself, as ``self.model(x)`` would."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        self.head(torch.relu(self.fc(self.features(x).mean(dim=(2, 3)))))


class PairLinear(nn.Linear):
    def forward(self, x):
        out = super().forward(x)
        return out, out.detach()


class TupleNet(CountingNet):
    """Its ``fc`` returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = PairLinear(4, 5)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.features(x).mean(dim=(2, 3)))[0]))


def sets(n_ind=12, n_ood=8):
    return {"ind": loader(random_set(n_ind, 1)), "ood": loader(random_set(n_ood, 2))}


MISCONFIGURATIONS = {
    "validation_step bypasses forward": (
        BypassesForward,
        {"layer": "fc"},
        r"no class scores were seen .* Call self\(x\) in validation_step \(not self.model\(x\)\)",
    ),
    "a tuple output without output_selector": (
        TupleNet,
        {"layer": "fc"},
        "is a tuple, not a tensor. Pass output_selector=",
    ),
    "class_names shorter than the labels": (
        CountingNet,
        {"layer": "fc", "class_names": ["a", "b"]},
        r"has 2 names, but a validation batch .* has label 2; give one name per class",
    ),
    "a mistyped ind=": (
        CountingNet,
        {"layer": "fc", "ind": "indd"},
        r"ind='indd'\) names no validation dataloader; names: \['ind', 'ood'\]",
    ),
    "reduction='none' on a conv map": (
        CountingNet,
        {"layer": "features", "reduction": "none"},
        "reduction='none'",
    ),
}


@pytest.mark.parametrize("case", list(MISCONFIGURATIONS))
def test_misconfigurations_stop_the_run_before_the_first_training_batch(tmp_path, case):
    model_type, options, message = MISCONFIGURATIONS[case]
    model = model_type()
    torch.manual_seed(0)
    t = trainer(tmp_path, [DeephysCallback(**options)], max_epochs=1)
    # capture's own errors stay TypeError / ValueError; the callback's are
    # MisconfigurationException (a ValueError too)
    with pytest.raises((MisconfigurationException, TypeError, ValueError), match=message):
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=sets())
    assert model.trained == 0  # the sanity check caught it
    assert not os.path.exists(os.path.join(t.logger.log_dir, "plugins"))  # wrote nothing


def test_without_a_sanity_check_the_first_validation_batch_checks(tmp_path):
    model = BypassesForward()
    callback = DeephysCallback(layer="fc", every_n_epochs=5)  # epoch 0 is not recorded
    t = trainer(tmp_path, [callback], max_epochs=2, num_sanity_val_steps=0)
    with pytest.raises(MisconfigurationException, match="no class scores were seen"):
        t.fit(model, loader(random_set(12, 0)), val_dataloaders=sets())
    assert model.trained == 3  # one epoch: its validation's first batch raised


def test_sanity_check_and_fast_dev_run_write_nothing_when_all_is_well(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], fast_dev_run=True, logger=False)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=sets())
    assert not any(name.startswith("events") for name in os.listdir(tmp_path))


def test_a_compiled_submodule_records_under_its_natural_name(tmp_path):
    torch.manual_seed(0)
    eager = CountingNet()
    compiled = CountingNet()
    compiled.load_state_dict(eager.state_dict())
    compiled.features = torch.compile(compiled.features)
    logs = {}
    for label, model, layer in (
        ("eager", eager, "features.0"),
        ("compiled", compiled, "features.0"),  # the natural name, looked through
    ):
        logger = TensorBoardLogger(str(tmp_path), name=label)
        t = trainer(tmp_path, [DeephysCallback(layer=layer)], logger=logger, max_epochs=1)
        t.validate(model, dataloaders=sets())
        logs[label] = read_log(logger.log_dir)
    assert logs["compiled"].layers == ("features.0",)
    np.testing.assert_allclose(
        logs["compiled"].activations("features.0", "ind").astype(np.float32),
        logs["eager"].activations("features.0", "ind").astype(np.float32),
        atol=2e-3,
    )


def test_trainer_test_records_with_its_stage(tmp_path):
    model = TinyNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=sets())
    t.test(model, dataloaders=sets(10, 6))
    run_dir = t.logger.log_dir
    fit = read_log(run_dir)  # the run directory itself; its evaluation run is inside
    assert [r.stage for r in fit.records] == ["fit"]
    # the fit already holds step 3: the test goes to a run of its own beside it
    tested = read_log(os.path.join(run_dir, "test_step3"))
    assert tested.record().stage == "test" and tested.steps == (3,)
    assert tested.record().num_images == {"ind": 10, "ood": 6}
    assert tested.scores("fc", "ood").novelty.shape == (5,)
    assert "stages=['test']" in repr(tested)


def test_stages_choose_what_records(tmp_path):
    model = TinyNet()
    t = trainer(tmp_path, [DeephysCallback(layer="fc", stages=["test"])], max_epochs=1)
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=sets())
    t.test(model, dataloaders=sets())
    log = read_log(t.logger.log_dir)  # one run: the fit's validation did not record
    assert [r.stage for r in log.records] == ["test"] and log.run == "."
    for wrong in (["train"], [], "test"):
        with pytest.raises(MisconfigurationException, match="stages"):
            DeephysCallback(layer="fc", stages=wrong)


@pytest.mark.parametrize("weights_only", [False, True])
def test_checkpoints_are_evaluated_at_their_own_step(tmp_path, weights_only):
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, save_weights_only=weights_only
    )
    t = trainer(tmp_path, [checkpoints], max_epochs=2, enable_checkpointing=True)
    t.fit(TinyNet(), loader(random_set(12, 0)))
    paths = sorted(str(p) for p in (tmp_path / "ckpt").iterdir())
    assert [os.path.basename(p) for p in paths] == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]
    logger = TensorBoardLogger(str(tmp_path), name="eval")
    evaluator = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger)
    for path in paths + paths[:1]:  # in order, then the first one again
        evaluator.validate(TinyNet(), dataloaders=sets(), ckpt_path=path)
    log = read_log(logger.log_dir)
    assert [(r.step, r.epoch, r.stage) for r in log.records] == [
        (3, 0, "validate"),
        (6, 1, "validate"),
    ]
    again = read_log(os.path.join(logger.log_dir, "validate_step3"))
    assert [(r.step, r.epoch) for r in again.records] == [(3, 0)]
    np.testing.assert_array_equal(again.activations("fc", "ind"), log.activations("fc", "ind", 3))


def test_an_evaluation_before_fit_does_not_silence_the_fit(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    t = trainer(tmp_path, [checkpoints], max_epochs=2, enable_checkpointing=True)
    t.fit(TinyNet(), loader(random_set(12, 0)))
    logger = TensorBoardLogger(str(tmp_path), name="finetune")
    evaluator = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger)
    evaluator.validate(
        TinyNet(), dataloaders=sets(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    )
    tuner = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger, max_epochs=2)
    tuner.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    main = read_log(logger.log_dir)
    assert [(r.step, r.stage) for r in main.records] == [(3, "validate"), (6, "fit")]
    # the fit's step 3 is held by the evaluation: it has a run of its own, not dropped
    assert [(r.step, r.stage) for r in read_log(logger.log_dir, run="fit_step3").records] == [
        (3, "fit")
    ]


def test_names_for_list_dataloaders_and_a_warning_for_one(tmp_path):
    callback = DeephysCallback(layer="fc", dataset_names=["clean", "noisy"])
    t = trainer(tmp_path, [callback], max_epochs=1)
    val = [loader(random_set(12, 1)), loader(random_set(8, 2))]
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    assert read_log(t.logger.log_dir).datasets == ("clean", "noisy")
    wrong = DeephysCallback(layer="fc", dataset_names=["clean"])
    t = trainer(tmp_path, [wrong], max_epochs=1)
    with pytest.raises(MisconfigurationException, match="names 1 datasets, but there are 2"):
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    named_dict = DeephysCallback(layer="fc", dataset_names=["a", "b"])
    t = trainer(tmp_path, [named_dict], max_epochs=1)
    with pytest.raises(MisconfigurationException, match="its keys \\['ind', 'ood'\\] name them"):
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    with pytest.warns(UserWarning, match="no OOD set to compare it with"):
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loader(random_set(8, 1)))


def test_scalars_and_histograms_can_be_switched_off(tmp_path):
    callback = DeephysCallback(layer="fc", log_scalars=False, log_histograms=False)
    t = trainer(tmp_path, [callback], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    acc = event_accumulator.EventAccumulator(t.logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    plugins = {acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in acc.Tags()["tensors"]}
    assert plugins == {"deephys"}  # nothing for the Scalars or Histograms tabs
    log = read_log(t.logger.log_dir)
    assert log.scores("fc", "ood").summary()["dead_neurons"] >= 0  # the tab's data are all there
    assert len(log.detection("ood")) == 3


def test_part_of_a_set_is_said(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1, limit_val_batches=1)
    with pytest.warns(UserWarning, match="4 of the 12 images of 'ind' were recorded"):
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    record = read_log(t.logger.log_dir).record()
    assert record.num_images == {"ind": 4, "ood": 4}
    assert record.dataset_sizes == {"ind": 12, "ood": 8}


def test_messages_name_the_real_cause(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", record_logits=False)], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    log = read_log(t.logger.log_dir)
    with pytest.raises(KeyError, match="has no logits for dataset 'ind'") as err:
        log.logits("ind")
    assert "layer" not in str(err.value) and "record_logits=True" in str(err.value)
    # a second run: the multi-run error names the CLI flag too
    t2 = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    t2.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    with pytest.raises(ValueError, match="--run"):
        read_log(tmp_path)
    # thumbnails recorded but their file gone: the message says which file, not "record"
    thumbs = os.path.join(t2.logger.log_dir, "plugins", "deephys", "thumbnails")
    for name in os.listdir(thumbs):
        os.remove(os.path.join(thumbs, name))
    with pytest.raises(ExportError, match="missing") as err:
        export_step(t2.logger.log_dir, tmp_path / "out")
    assert "thumbnails=True" not in str(err.value)


def test_test_messages_say_test(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", ind=5)])
    with pytest.raises(MisconfigurationException, match="there are 2 test dataloaders"):
        t.test(TinyNet(), dataloaders=sets(), verbose=False)


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path):
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=3)
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=sets())
    command = [sys.executable, "-m", "deephys_lightning", "scores", str(tmp_path), "--csv"]
    scores = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scores.stdout.readline()  # read one line, then close the pipe, as `| head -1` does
    scores.stdout.close()
    _, stderr = scores.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()


def test_validate_after_fit_on_the_same_trainer_keeps_both(tmp_path):
    model = TinyNet()
    t = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[DeephysCallback(layer="fc")],
        logger=TensorBoardLogger(str(tmp_path), name="tiny"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    t.fit(model, loader(random_set(12, 0)), val_dataloaders=sets())
    t.validate(model, dataloaders=sets())
    t.validate(model, dataloaders=sets())
    runs = sorted(os.listdir(t.logger.log_dir))
    assert "validate_step3" in runs and "validate_step3_2" in runs


def test_log_state_keeps_each_step_with_its_stage_and_reads_older_files(tmp_path):
    import json

    from deephys_lightning.writing.log_state import LogState
    from tensorboard_plugin_deephys.log import metadata

    state = LogState.load(str(tmp_path))
    assert state.holder(3) is None
    state.add(6, "validate")
    state.add(3, "fit")
    state.save()
    again = LogState.load(str(tmp_path))
    assert (again.holder(3), again.holder(6), again.holder(4), again.last_step) == (
        "fit",
        "validate",
        None,
        6,
    )
    # a state file of the previous release: every step up to its last one is held
    with open(metadata.state_path(str(tmp_path)), "w") as handle:
        json.dump({"last_step": 6, "thumbnails": {"ind": "abc"}}, handle)
    old = LogState.load(str(tmp_path))
    assert (old.holder(2), old.holder(6), old.holder(7)) == ("fit", "fit", None)
    assert old.thumbnails == {"ind": "abc"}


@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_checkpoints_out_of_order_are_all_served_by_tensorboard(tmp_path, load_fast):
    import requests
    from tensorboard_process import running_tensorboard

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    t = trainer(tmp_path, [checkpoints], max_epochs=2, enable_checkpointing=True)
    t.fit(TinyNet(), loader(random_set(12, 0)))
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="eval")
    evaluator = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger)
    for name in ("epoch=1-step=6.ckpt", "epoch=0-step=3.ckpt"):  # the later one first
        evaluator.validate(TinyNet(), dataloaders=sets(), ckpt_path=str(tmp_path / "ckpt" / name))
    # an earlier step after a later one would make TensorBoard's Rust loader drop the
    # later one: it goes to a run of its own, and both loaders serve both
    with running_tensorboard(tmp_path / "logs", load_fast=load_fast) as base:
        runs = requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"]
        steps = {r["run"]: [(s["step"], s["stage"]) for s in r["steps"]] for r in runs}
        assert steps == {
            "eval/version_0": [(6, "validate")],
            "eval/version_0/validate_step3": [(3, "validate")],
        }
        for run, step in (("eval/version_0", 6), ("eval/version_0/validate_step3", 3)):
            summary = requests.get(
                f"{base}/data/plugin/deephys/summary",
                params={"run": run, "layer": "fc", "step": step},
                timeout=10,
            )
            assert summary.status_code == 200 and summary.json()["step"] == step
