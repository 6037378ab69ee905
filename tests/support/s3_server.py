"""A real S3 API server for the tests: moto's standalone server on 127.0.0.1.

Clients reach it the standard way: ``AWS_ENDPOINT_URL`` and dummy credentials in
the environment (boto3, s3fs and TensorBoard's own S3 reader all honour them), set
while the server runs and restored after. The server is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid

import requests
from tensorboard_process import stop

_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_PROCESSES: dict[str, subprocess.Popen] = {}


@contextlib.contextmanager
def running_s3_server(timeout: float = 60.0):
    """Yield the endpoint URL of a fresh moto S3 server; the environment points at it.
    ``running_s3_server.stop(endpoint)`` stops it early (a store gone away)."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {key: os.environ.get(key) for key in (*_ENVIRONMENT, "AWS_ENDPOINT_URL")}
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        os.environ.update(_ENVIRONMENT, AWS_ENDPOINT_URL=endpoint)
        _forget_cached_filesystems()
        _PROCESSES[endpoint] = process
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _forget_cached_filesystems()
        _PROCESSES.pop(endpoint, None)
        stop(process)


running_s3_server.stop = lambda endpoint: stop(_PROCESSES[endpoint])


def new_bucket() -> str:
    """A new, empty bucket on the running server; its name."""
    import boto3

    name = f"deephys-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def objects(bucket: str) -> list[str]:
    """The keys in ``bucket``."""
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _forget_cached_filesystems() -> None:
    """fsspec caches filesystem instances (with their endpoint): start afresh."""
    import fsspec

    from tensorboard_plugin_deephys.log import storage

    storage.forget_filesystems()
    with contextlib.suppress(Exception):
        fsspec.filesystem("s3").clear_instance_cache()
