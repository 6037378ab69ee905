"""Make the stored events-layout log (every array in the events) at commit bccd4fb.

Usage (from the repository root, at that commit): python tests/data/make_events_layout_log.py
tests/data/logs
"""

import shutil
import sys

sys.path.insert(0, "tests/support")

import lightning as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tiny_model import TinyNet, loader, random_set  # noqa: E402

from deephys_lightning import DeephysCallback  # noqa: E402


def main(out: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    L.seed_everything(0)
    sets = [random_set(24, 1), random_set(24, 2), random_set(24, 3)]
    callback = DeephysCallback(
        layers=["features.0", "fc"],
        dataset_names=["ind", "ood one", "ood/two"],
        class_names=["zero", "one", "two"],
        top_k=4,
        thumbnail_size=8,
        logits_layer="head",
    )
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(out, name="", version="events_layout"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(TinyNet(), loader(random_set(16, 0)), [loader(s) for s in sets])


if __name__ == "__main__":  # pytest imports this file (doctests): it must do nothing then
    main(sys.argv[1])
