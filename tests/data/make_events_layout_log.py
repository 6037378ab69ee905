"""Make the stored old-layout log (every array in the events) at commit bccd4fb."""
import sys, shutil, os
sys.path.insert(0, "tests/support")
import lightning as L, torch
from lightning.pytorch.loggers import TensorBoardLogger
from deephys_lightning import DeephysCallback
from tiny_model import TinyNet, random_set, loader

out = sys.argv[1]
shutil.rmtree(out, ignore_errors=True)
L.seed_everything(0)
model = TinyNet()
sets = [random_set(24, 1), random_set(24, 2), random_set(24, 3)]
cb = DeephysCallback(layers=["features.0", "fc"], dataset_names=["ind", "ood one", "ood/two"],
                     class_names=["zero", "one", "two"], top_k=4, thumbnail_size=8, logits_layer="head")
trainer = L.Trainer(max_epochs=3, limit_train_batches=2, callbacks=[cb], accelerator="cpu", devices=1,
                    logger=TensorBoardLogger(out, name="", version="events_layout"),
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    log_every_n_steps=1)
trainer.fit(model, loader(random_set(16, 0)), [loader(s) for s in sets])
