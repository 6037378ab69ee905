"""The epoch plan: one rule for full matrices and logits, the epoch's mode, names."""

from __future__ import annotations

import pytest
from lightning.fabric.utilities.exceptions import MisconfigurationException

from deephys_lightning.recording.plan import (
    EpochPlan,
    epoch_mode,
    ind_first,
    named_loaders,
    writes_matrix,
)
from deephys_lightning.recording.sampling import SamplingPlan


def _plan(max_bytes, record_logits=None) -> EpochPlan:
    sampling = {0: SamplingPlan.for_rank(10, 1, 0, None)}
    return EpochPlan(
        "fit", "record", ["ind"], [0], sampling, None, (3, 0), max_bytes, record_logits
    )


def test_one_rule_for_the_full_matrix_and_the_logits():
    assert writes_matrix(10, 8, 160) and not writes_matrix(10, 8, 159)  # float16: 2 bytes
    assert writes_matrix(10**6, 10**4, None)
    plan = _plan(max_bytes=160)
    assert plan.keeps_logits(10, [8]) and plan.keeps_logits(10, [100, 8])
    assert not plan.keeps_logits(10, [9])  # no layer's matrix is written
    assert plan.keeps_logits(None, [9])  # size unknown while capturing: decided when written
    assert _plan(160, record_logits=False).keeps_logits(10, [8]) is False
    assert _plan(0, record_logits=True).keeps_logits(10, [8]) is True


@pytest.mark.parametrize(
    ("kwargs", "mode"),
    [
        ({"sanity_checking": True}, "check"),
        ({"fast_dev_run": 1}, "check"),
        ({"fast_dev_run": 1, "record_fast_dev_run": True}, "record"),
        ({"epoch": 0, "every_n_epochs": 2}, "check"),  # the first validation still checks
        ({"epoch": 0, "every_n_epochs": 2, "checked": True}, None),
        ({"epoch": 1, "every_n_epochs": 2, "checked": True}, "record"),
    ],
)
def test_epoch_mode(kwargs, mode):
    given = {
        "sanity_checking": False,
        "fast_dev_run": 0,
        "record_fast_dev_run": False,
        "epoch": 0,
        "every_n_epochs": 1,
        "checked": False,
        **kwargs,
    }
    assert epoch_mode("fit", ("fit",), **given) == mode
    assert epoch_mode("test", ("fit",), **given) is None  # a stage that does not record


def test_names_and_the_in_distribution_set_first():
    assert [n for n, _ in named_loaders({"a": 1, 2: 3})] == ["a", "2"]
    assert [n for n, _ in named_loaders([1, 2])] == ["dataset_0", "dataset_1"]
    assert [n for n, _ in named_loaders([1, 2], ["x", "y"])] == ["x", "y"]
    with pytest.raises(MisconfigurationException, match="names 1 datasets"):
        named_loaders([1, 2], ["x"])
    assert ind_first(["a", "b", "c"], "b") == [1, 0, 2]
    assert ind_first(["a", "b", "c"], 2) == [2, 0, 1]
    with pytest.raises(MisconfigurationException, match="names no validation dataloader"):
        ind_first(["a"], "z")
