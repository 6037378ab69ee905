"""Deephys (deep electrophysiology) for PyTorch Lightning and TensorBoard.

Example::

    from deephys_lightning import DeephysCallback, read_log

    trainer = L.Trainer(callbacks=[DeephysCallback(layer="backbone.fc1")])
    trainer.fit(model, train_loader, val_dataloaders={"ind": ind, "ood": ood})
    log = read_log(trainer.logger.log_dir)
    log.activations("backbone.fc1", "ood", log.steps[-1])  # float16 [N, M]
"""

from deephys_lightning.callback import DeephysCallback
from deephys_lightning.reader import DeephysLog, read_log, read_runs

__all__ = ["DeephysCallback", "DeephysLog", "read_log", "read_runs"]
__version__ = "0.1.0"
