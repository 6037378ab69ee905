"""Run trainer.validate, then trainer.test, with DeephysCallback on 1 or 2 CPU
processes (DDP, gloo).

    python tests/support/ddp_validate.py LOGDIR WEIGHTS DEVICES [MAX_IMAGES|-] [STRATEGY]
                                         [CHUNK_BYTES]

Used by test_distributed.py: Lightning's "ddp" strategy starts the second process
by running this script again, so it must be a script, not a test function. STRATEGY
"nodes": DEVICES nodes of one process each (``num_nodes``), each started by the test
with its own ``NODE_RANK`` (Lightning's environment variables for multi-node runs).
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_model import TinyNet, loader, random_set

from deephys_lightning import DeephysCallback


class _LeaveTogether(L.Callback):
    """ddp_spawn's workers end inside Lightning: each, at its teardown, waits for the
    others, then destroys its process group, as the processes started one by one do
    at the end of main (a gloo process group left to the interpreter's exit aborts it
    now and then: "terminate called without an active exception")."""

    def teardown(self, trainer, pl_module, stage):
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def main() -> None:
    logdir, weights, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    max_images = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    strategy = sys.argv[5] if len(sys.argv) > 5 else "ddp"
    chunk_bytes = {"gather_chunk_bytes": int(sys.argv[6])} if len(sys.argv) > 6 else {}
    model = TinyNet()
    model.load_state_dict(torch.load(weights))
    nodes = 1
    if strategy == "nodes":
        nodes, devices, strategy = devices, 1, "ddp"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        num_nodes=nodes,
        strategy=strategy if devices * nodes > 1 else "auto",
        logger=TensorBoardLogger(logdir, name="run", version=0),
        callbacks=[
            DeephysCallback(
                layers=["fc", "features.0"],
                max_images=max_images,
                # fitted on a reference set of 11 images in 6 batches: each process runs
                # every other batch, the rows are gathered
                ood_detectors=["msp", "knn", "vim"],
                reference=loader(random_set(11, 6), 2),
                **chunk_bytes,
            ),
            *([_LeaveTogether()] if strategy == "ddp_spawn" else []),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(
        model,
        dataloaders={
            "ind": loader(random_set(10, 1), 3),
            "ood": loader(random_set(7, 2), 3),  # 7 and 9 do not split evenly in two
            "odd": loader(random_set(9, 3), 2),
        },
        verbose=False,
    )
    # trainer.test at the same step: its record goes to run/version_0/test_step0
    trainer.test(
        model,
        dataloaders={"ind": loader(random_set(8, 4), 3), "ood": loader(random_set(5, 5), 2)},
        verbose=False,
    )
    if torch.distributed.is_initialized():
        # Processes started one by one (the "nodes" case): rank zero hosts the store, so
        # it leaves only once every process is done with it (else gloo may abort the
        # others at exit).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
