"""DeephysCallback configured from a LightningCLI YAML file."""

from __future__ import annotations

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI
from tiny_model import TinyNet, loader, random_set

from deephys_lightning import read_log


class TinyData(L.LightningDataModule):
    def train_dataloader(self):
        return loader(random_set(12, 0))

    def val_dataloader(self):
        return {"ind": loader(random_set(6, 1)), "ood": loader(random_set(5, 2))}


def test_callback_from_a_lightning_cli_yaml(tmp_path):
    config = {
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "limit_train_batches": 2,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "default_root_dir": str(tmp_path),
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path), "name": "cli"},
            },
            "callbacks": [
                {
                    "class_path": "deephys_lightning.DeephysCallback",
                    "init_args": {
                        "layers": ["fc", "features.0"],
                        "class_names": ["a", "b", "c"],
                        "ind": "ind",
                        "max_images": 4,
                        "top_k": 3,
                    },
                }
            ],
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    LightningCLI(TinyNet, TinyData, args=["fit", "--config", str(path)], save_config_callback=None)
    log = read_log(tmp_path / "cli" / "version_0")
    assert log.layers == ("fc", "features.0")
    assert log.datasets == ("ind", "ood")
    assert log.class_names == ("a", "b", "c")
    assert log.latest.num_images == {"ind": 4, "ood": 4}
    assert log.latest.top_k == 3
