"""Fit TinyNet for two epochs with DeephysCallback on 1 or 2 CPU processes (DDP,
gloo): the second recorded epoch takes the path where the thumbnails are not kept.

    python tests/support/ddp_fit.py LOGDIR DEVICES

Used by test_distributed.py (Lightning's "ddp" strategy runs this script again for
the second process, so it must be a script).
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_model import TinyNet, loader, random_set

from deephys_lightning import DeephysCallback


def main() -> None:
    logdir, devices = sys.argv[1], int(sys.argv[2])
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=2,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(logdir, name="run", version=0),
        callbacks=[DeephysCallback(layer="fc", gather_chunk_bytes=64)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(
        TinyNet(),
        loader(random_set(8, 0)),
        val_dataloaders={"ind": loader(random_set(10, 1), 3), "ood": loader(random_set(7, 2), 3)},
    )


if __name__ == "__main__":
    main()
