"""Deephys (deep electrophysiology) for PyTorch Lightning and TensorBoard.

Example::

    from deephys_lightning import DeephysCallback, read_log

    trainer = L.Trainer(callbacks=[DeephysCallback(layer="backbone.fc1")])
    trainer.fit(model, train_loader, val_dataloaders={"ind": ind, "ood": ood})
    log = read_log(trainer.logger.log_dir)
    log.activations("backbone.fc1", "ood")  # float16 [N, M], latest step

``DeephysCallback`` is imported on first use, so a notebook that only reads logs
(``read_log``, ``read_runs``) loads NumPy and TensorBoard's reader, not torch or
Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deephys_lightning.reader import DeephysLog, read_log, read_runs

if TYPE_CHECKING:
    from deephys_lightning.callback import DeephysCallback

__all__ = ["DeephysCallback", "DeephysLog", "read_log", "read_runs"]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # PEP 562: the callback (and with it torch and Lightning) loads when first named.
    if name == "DeephysCallback":
        from deephys_lightning.callback import DeephysCallback

        return DeephysCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
