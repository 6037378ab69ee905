"""On a real S3 API (moto's server): another set's thumbnail pack with the same image
count copied over a pack's key is refused by the plugin and by export, in words."""

from __future__ import annotations

import os

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from plugin_client import plugin_client
from s3_server import new_bucket, objects, running_s3_server
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import ExportError, export_step
from tensorboard_plugin_deephys.log.thumbnail_pack import FOREIGN


@pytest.fixture(scope="module")
def s3_server():
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.mark.fault
def test_another_sets_pack_copied_over_its_key_is_refused(s3_server, tmp_path):
    import boto3

    bucket = new_bucket()
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        logger = TensorBoardLogger(f"s3://{bucket}/exp", name="tiny")
        t = trainer(tmp_path, [DeephysCallback(layer="fc")], logger=logger, max_epochs=1)
        val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
        t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=val)
    finally:
        os.chdir(before)
    run_dir = logger.log_dir
    packs = {
        key.rsplit("/", 1)[1].split("-", 1)[0]: key
        for key in objects(bucket)
        if key.endswith(".thumbs")
    }
    client = plugin_client(f"s3://{bucket}/exp")
    url = "/data/plugin/deephys/thumbnail?run=tiny/version_0&dataset=ind&index=3"
    assert client.get(url).status_code == 200
    boto3.client("s3").copy_object(
        Bucket=bucket, Key=packs["ind"], CopySource={"Bucket": bucket, "Key": packs["ood"]}
    )
    response = plugin_client(f"s3://{bucket}/exp").get(url)  # a TensorBoard started now
    assert response.status_code == 404, response.data[:300]
    error = response.json["error"]
    assert "run 'tiny/version_0'" in error and "thumbnails of 'ind'" in error and FOREIGN in error
    with pytest.raises(KeyError, match=FOREIGN):
        read_log(run_dir).thumbnails("ind")
    with pytest.raises(ExportError, match=f"dataset 'ind'.*{FOREIGN}"):
        export_step(run_dir, tmp_path / "export")
