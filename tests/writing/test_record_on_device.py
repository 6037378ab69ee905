"""A record computed where its activations are (issue 27): ``record_view`` on torch
tensors (on the CPU here, on a GPU where there is one) gives the very arrays it gives
on host arrays, with NaN and infinite rows left out, a dead neuron, ties, k > N; on a
GPU, nothing the size of the activations crosses to the host (the contributions
through the head and its check, and the detectors fitted on features, included), and
the gathered activations stay on the device within the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deephys_lightning import metrics
from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.recording import rows as columns
from deephys_lightning.recording.gather import gather_rows
from deephys_lightning.recording.rows import DeviceBudget, Rows
from deephys_lightning.writing.view_data import DatasetRecording, record_view
from tensorboard_plugin_deephys.log.metadata import Kind, Record

CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)
NAMES = ("ind", "near", "far")


def _head(m: int, classes: int) -> LinearHead:
    rng = np.random.default_rng(99)
    return LinearHead(rng.normal(size=(classes, m)).astype(np.float32), np.zeros(classes))


def _recordings(n: int, m: int, classes: int, seed: int = 0) -> dict[str, DatasetRecording]:
    """Three sets whose logits are those of :func:`_head` (the layer feeds it)."""
    rng = np.random.default_rng(seed)
    head = _head(m, classes)
    recordings = {}
    for i, name in enumerate(NAMES):
        acts = np.maximum(np.round(rng.normal(i * 0.2, 1, (n, m)) * 4) / 4, 0).astype(np.float16)
        acts[:, 1] = 0  # dead
        with np.errstate(invalid="ignore", over="ignore"):
            logits = head.logits(acts).numpy()
        if name != "ind":
            acts[2, 3] = np.nan
            acts[5, 0] = np.inf
            logits[n - 1] = np.nan
        labels = rng.integers(0, classes, n)
        recordings[name] = DatasetRecording(
            labels=labels,
            predictions=logits.argmax(1),
            activations={"fc": acts},
            logits=logits,
        )
    return recordings


def _record(recordings, classes: int, top_k: int) -> Record:
    return Record(
        step=3,
        epoch=1,
        layers=("fc",),
        datasets=NAMES,
        class_names=tuple(f"c{i}" for i in range(classes)),
        num_images={name: len(r.labels) for name, r in recordings.items()},
        top_k=top_k,
    )


def _on(recordings, device: str) -> dict[str, DatasetRecording]:
    moved = {}
    for name, rec in recordings.items():
        acts = {layer: torch.from_numpy(a).to(device) for layer, a in rec.activations.items()}
        moved[name] = DatasetRecording(
            labels=rec.labels, predictions=rec.predictions, activations=acts, logits=rec.logits
        )
    return moved


def _assert_same_views(found, expected, device: str = "cpu") -> None:
    assert found.record == expected.record
    assert found.accuracy == expected.accuracy
    assert found.layers.keys() == expected.layers.keys()
    for key, arrays in expected.layers.items():
        assert found.layers[key].keys() == arrays.keys(), key
        for kind, array in arrays.items():
            np.testing.assert_array_equal(found.layers[key][kind], array, err_msg=f"{key} {kind}")
    for key, scores in expected.scores.items():
        for field in ("novelty_raw", "spurious", "activation_ratio", "ind_max"):
            np.testing.assert_array_equal(getattr(found.scores[key], field), getattr(scores, field))
    if device == "cpu":
        assert found.detections == expected.detections
        return
    # On an accelerator the detectors on features multiply in float64 (never TF32),
    # the host in float32: the same rows, their metrics equal to float32's precision.
    assert found.detections.keys() == expected.detections.keys()
    for ood, rows in expected.detections.items():
        assert len(found.detections[ood]) == len(rows)
        for got, want in zip(found.detections[ood], rows, strict=True):
            assert (got.detector, got.layer, got.ind_images, got.ood_images) == (
                want.detector,
                want.layer,
                want.ind_images,
                want.ood_images,
            )
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"):
                np.testing.assert_allclose(
                    getattr(got, metric), getattr(want, metric), atol=1e-3, err_msg=metric
                )


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize(("n", "m", "classes", "top_k"), [(120, 24, 5, 8), (6, 5, 3, 32)])
def test_a_record_computed_on_tensors_equals_the_host_computation(device, n, m, classes, top_k):
    recordings = _recordings(n, m, classes)
    record = _record(recordings, classes, top_k)
    detectors = ("msp", "energy", "mahalanobis", "knn", "react", "vim")
    heads = {"head": _head(m, classes)}  # the contributions and the head detectors too
    expected = record_view(
        record, recordings, max_activation_bytes=None, detectors=detectors, heads=heads
    )
    found = record_view(
        record, _on(recordings, device), max_activation_bytes=None, detectors=detectors, heads=heads
    )
    _assert_same_views(found, expected, device)
    assert {left.cause for left in found.record.left_out} >= {"activation", "logits"}
    assert Kind.PREDICTED_PUSH_NEURONS in found.layers[("fc", "near")]  # the head was used


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_only_small_results_cross_to_the_host(monkeypatch):
    n, m = 4096, 256
    recordings = _recordings(n, m, 10)
    record = _record(recordings, 10, 32)
    crossed: list[int] = []
    host = metrics._host

    def counted(tensor):
        crossed.append(tensor.numel())
        return host(tensor)

    def refused(array):
        if isinstance(array, torch.Tensor) and array.is_cuda and array.numel() >= n * m // 2:
            raise AssertionError(f"a [{list(array.shape)}] tensor was moved to the host")
        return np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array)

    monkeypatch.setattr(metrics, "_host", counted)
    monkeypatch.setattr(metrics, "as_numpy", refused)
    view = record_view(
        record,
        _on(recordings, "cuda"),
        max_activation_bytes=0,
        detectors=("msp", "mahalanobis", "knn", "vim"),  # the detectors on features too
        heads={"head": _head(m, 10)},  # the contributions and the head's check on the GPU
    )
    assert crossed and max(crossed) < n * m // 2
    assert Kind.MARGINS in view.layers[("fc", "ind")]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gathered_activations_stay_on_the_device_within_the_budget():
    def rows(count: int) -> Rows:
        return Rows(
            {
                columns.POSITIONS: torch.arange(count, device="cuda"),
                columns.LABELS: torch.zeros(count, dtype=torch.int64, device="cuda"),
                columns.act_column("fc"): torch.ones(count, 8, dtype=torch.float16, device="cuda"),
            }
        )

    budget = DeviceBudget(10 * 8 * 2)  # room for one set of 10 images
    first = gather_rows(rows(10), None, None, 1, "cuda", keep=budget)
    second = gather_rows(rows(10), None, None, 1, "cuda", keep=budget)
    assert first is not None and second is not None
    assert first.acts["fc"].is_cuda and not second.acts["fc"].is_cuda
    assert not first.labels.is_cuda and not first.positions.is_cuda


def test_on_the_cpu_gathered_rows_are_host_rows_whatever_the_budget():
    rows = Rows(
        {
            columns.POSITIONS: torch.tensor([1, 0]),
            columns.LABELS: torch.tensor([4, 3]),
            columns.act_column("fc"): torch.tensor([[1.0], [2.0]], dtype=torch.float16),
        }
    )
    budget = DeviceBudget(1 << 20)
    found = gather_rows(rows, None, None, 1, "cpu", keep=budget)
    assert found is not None
    assert found.labels.tolist() == [3, 4]  # in dataset order
    assert found.acts["fc"].tolist() == [[2.0], [1.0]]
    assert budget.left == 1 << 20  # nothing taken on the CPU
