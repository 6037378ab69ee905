"""Recording on a GPU: the recorded batches never wait for the device, rows stay on it
(or in pinned host memory beyond the bound), thumbnails are made there. CUDA only:
skipped where there is none (CI has no GPU); run by hand on a machine with one."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from tiny_model import TinyNet, loader, module_output, random_set, trainer

from deephys_lightning import DeephysCallback, read_log

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


class SyncsAreErrors(L.Callback):
    """Turns every device synchronisation into an error from the start of a recorded
    batch to the end of it (DeephysCallback's batch hooks run inside that window:
    list this callback before it and :class:`SyncsAllowed` after it)."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            torch.cuda.set_sync_debug_mode("error")


class SyncsAllowed(L.Callback):
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        torch.cuda.set_sync_debug_mode("default")


def _cuda_trainer(tmp_path, callbacks, **kwargs):
    return trainer(tmp_path, callbacks, accelerator="cuda", **kwargs)


class _OnDevice(torch.utils.data.Dataset):
    """Images and labels already on the GPU: no host-to-device copy in the batch path."""

    def __init__(self, data):
        self.x, self.y = (t.cuda() for t in data.tensors)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_recorded_batches_never_synchronise(tmp_path):
    deephys = DeephysCallback(layer="fc")
    val = {"ind": loader(_OnDevice(random_set(16, 1))), "ood": loader(_OnDevice(random_set(12, 2)))}
    t = _cuda_trainer(tmp_path, [SyncsAreErrors(), deephys, SyncsAllowed()], num_sanity_val_steps=0)
    try:
        t.validate(TinyNet(), dataloaders=val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    log = read_log(t.logger.log_dir)
    assert log.thumbnails("ind").shape[0] == 16 and log.labels("ood").shape == (12,)


def test_rows_are_recorded_exactly_from_device_or_pinned_buffers(tmp_path):
    data = random_set(10, 3)
    for bound in (None, 0):  # kept on the GPU, or in pinned host memory
        kwargs = {} if bound is None else {"max_device_buffer_bytes": bound}
        t = _cuda_trainer(tmp_path / str(bound), [DeephysCallback(layer="fc", **kwargs)])
        model = TinyNet()
        t.validate(model, dataloaders=loader(data))
        recorded = read_log(t.logger.log_dir).activations("fc", "dataset_0")
        output, _ = module_output(model.cuda(), model.fc, data.tensors[0].cuda())
        np.testing.assert_array_equal(recorded, torch.relu(output).half().cpu().numpy())


def test_sixteen_bit_mixed_precision_records_the_float16_rounding(tmp_path):
    data = random_set(8, 4)
    model = TinyNet()
    t = _cuda_trainer(tmp_path, [DeephysCallback(layer="fc")], precision="16-mixed")
    t.validate(model, dataloaders=loader(data))
    recorded = read_log(t.logger.log_dir).activations("fc", "dataset_0")
    with torch.autocast("cuda", dtype=torch.float16):
        output, _ = module_output(model.cuda(), model.fc, data.tensors[0].cuda())
    np.testing.assert_array_equal(recorded, torch.relu(output.float()).half().cpu().numpy())


def test_recorded_maps_never_synchronise(tmp_path):
    """A conv layer's running top-k of maps is merged on the device batch by batch, also
    where max_images leaves rows of a batch out, without waiting for it."""
    data = random_set(16, 1)
    deephys = DeephysCallback(layers=["features", "fc"], max_images=12, top_k=4)
    val = {"ind": loader(_OnDevice(data)), "ood": loader(_OnDevice(random_set(12, 2)))}
    t = _cuda_trainer(tmp_path, [SyncsAreErrors(), deephys, SyncsAllowed()], num_sanity_val_steps=0)
    model = TinyNet()
    try:
        t.validate(model, dataloaders=val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    log = read_log(t.logger.log_dir)
    positions = log.positions("ind")
    indices, _ = log.top_images("features", "ind")
    output, _ = module_output(model.cuda(), model.features, data.tensors[0][positions].cuda())
    expected = torch.relu(output.double()).cpu().numpy()[indices, np.arange(4)[:, None]]
    maps = log.top_maps("features", "ind")
    assert maps.shape == (4, 4, 6, 6)
    # cuDNN may pick other kernels (TF32) for another batch size: a loose bound
    np.testing.assert_allclose(maps.astype(np.float64), expected, rtol=1e-2, atol=1e-3)
