"""DDP and ddp_spawn with two CPU processes (gloo) log the same arrays as one process
(the maps of the top images too), also when every column is gathered in chunks of 64
bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import TinyNet

from deephys_lightning import read_log

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "ddp_validate.py"


def _run(logdir, weights, devices, *extra):
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parent), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(logdir), str(weights), str(devices), *map(str, extra)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return read_log(Path(logdir) / "run" / "version_0")


@pytest.mark.parametrize(
    ("max_images", "strategy", "chunk_bytes"),
    [(None, "ddp", None), (5, "ddp", None), (None, "ddp_spawn", 64)],
    ids=["ddp", "ddp-max_images", "ddp_spawn-64-byte-chunks"],
)
def test_two_processes_log_what_one_process_logs(tmp_path, max_images, strategy, chunk_bytes):
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(TinyNet().state_dict(), weights)
    extra = ("-" if max_images is None else max_images, strategy)
    extra += () if chunk_bytes is None else (chunk_bytes,)
    single = _run(tmp_path / "single", weights, 1, *extra)
    double = _run(tmp_path / "double", weights, 2, *extra)
    _assert_same(single, double, max_images)


def test_two_nodes_of_one_process_log_what_one_process_logs(tmp_path):
    """Lightning's num_nodes=2, one process per "node" on 127.0.0.1 (each started with
    its NODE_RANK, as a cluster's launcher would): the same arrays as one process."""
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(TinyNet().state_dict(), weights)
    single = _run(tmp_path / "single", weights, 1, "-", "ddp")
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path / "nodes"), str(weights), "2", "-", "nodes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(
                os.environ,
                PYTHONPATH=str(SCRIPT.parent),
                OMP_NUM_THREADS="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                WORLD_SIZE="2",
                NODE_RANK=str(node),
                LOCAL_RANK="0",
            ),
        )
        for node in (0, 1)
    ]
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "MEMBER: 2/2" in outputs[1]  # one world of two processes, not two of one
    _assert_same(single, read_log(Path(tmp_path) / "nodes" / "run" / "version_0"), None)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_same(single, double, max_images) -> None:
    assert double.datasets == single.datasets == ("ind", "ood", "odd")
    step = single.steps[-1]
    assert double.steps == single.steps
    for dataset in single.datasets:
        expected = min(max_images or 99, {"ind": 10, "ood": 7, "odd": 9}[dataset])
        assert single.latest.num_images[dataset] == expected
        assert double.latest.num_images[dataset] == expected
        for getter in ("labels", "predictions", "positions"):
            np.testing.assert_array_equal(
                getattr(double, getter)(dataset, step), getattr(single, getter)(dataset, step)
            )
        np.testing.assert_array_equal(double.thumbnails(dataset), single.thumbnails(dataset))
        np.testing.assert_allclose(
            double.logits(dataset, step), single.logits(dataset, step), rtol=1e-5, atol=1e-6
        )
        classes, probabilities = double.top_predictions(dataset, step)
        assert classes.shape == (expected, 3)  # k = min(5, 3 classes)
        np.testing.assert_array_equal(classes, single.top_predictions(dataset, step)[0])
        np.testing.assert_allclose(
            probabilities, single.top_predictions(dataset, step)[1], rtol=1e-5, atol=1e-6
        )
        if dataset != "ind":  # the detectors fitted on the gathered reference set
            found = {(r.detector, r.layer): r for r in double.detection(dataset, step)}
            for key, row in {
                (r.detector, r.layer): r for r in single.detection(dataset, step)
            }.items():
                assert found[key].fitted_on == row.fitted_on
                assert found[key].fit_images == row.fit_images
                assert found[key].auroc == pytest.approx(row.auroc, abs=1e-6, nan_ok=True)
            assert found[("knn", "fc")].fit_images == 11
            assert found[("vim", "fc")].note == "" and found[("vim", "features.0")].note != ""
        for layer in ("fc", "features.0"):
            np.testing.assert_allclose(
                double.activations(layer, dataset, step).astype(np.float32),
                single.activations(layer, dataset, step).astype(np.float32),
                rtol=1e-3,
                atol=1e-4,
            )
        # each process's running top-k of the maps, merged: the single process's
        top_images = double.top_images("features.0", dataset, step)[0]
        np.testing.assert_array_equal(top_images, single.top_images("features.0", dataset, step)[0])
        maps = double.top_maps("features.0", dataset, step)
        assert maps.shape == (4, min(expected, 32), 6, 6) and maps.dtype == np.float16
        np.testing.assert_allclose(
            maps.astype(np.float32),
            single.top_maps("features.0", dataset, step).astype(np.float32),
            rtol=1e-3,
            atol=1e-4,
        )


def test_two_processes_agree_on_when_thumbnails_travel(tmp_path):
    """In a fit, the second recorded epoch keeps no thumbnails (unchanged images): every
    process must take the same collectives; a hang or a mismatch fails here."""
    script = SCRIPT.with_name("ddp_fit.py")
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parent), OMP_NUM_THREADS="1")
    logs = {}
    for devices in (1, 2):
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / str(devices)), str(devices)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        logs[devices] = read_log(tmp_path / str(devices) / "run" / "version_0")
    single, double = logs[1], logs[2]
    assert len(double.steps) == 2 and len(single.steps) == 2
    for dataset in ("ind", "ood"):
        for step in double.steps:
            np.testing.assert_array_equal(
                double.thumbnails(dataset, step), single.thumbnails(dataset)
            )
            np.testing.assert_array_equal(
                double.positions(dataset, step), np.arange(len(single.positions(dataset)))
            )
    folder = tmp_path / "2" / "run" / "version_0" / "plugins" / "deephys" / "thumbnails"
    assert len([p for p in folder.iterdir() if not p.name.endswith(".crc32c.npy")]) == 2
