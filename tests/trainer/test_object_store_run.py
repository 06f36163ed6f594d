"""Training with the dataset in S3 or GCS and the outputs written there, then resumed by a new process."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from kubeclip.trainer.run import run_training
from kubeclip.trainer.storage import remote
from tests.support.training import make_config


@pytest.fixture(params=["s3", "gs"])
def store_prefix(request, tinted_zip, monkeypatch, tmp_path) -> str:
    """A fresh prefix in the S3 or GCS test server holding ``data.zip``; the environment points at the server."""
    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        server.apply_env(monkeypatch, tmp_path)
        server.client().upload_file(str(tinted_zip), server.bucket, f"{prefix}/data.zip")
    else:
        server = request.getfixturevalue("gcs_server")
        server.apply_env(monkeypatch)
        server.client().bucket(server.bucket).blob(f"{prefix}/data.zip").upload_from_filename(str(tinted_zip))
    return f"{request.param}://{server.bucket}/{prefix}"


@pytest.mark.objectstore
def test_run_reads_and_writes_object_store_then_resumes(store_prefix, tmp_path, caplog):
    config = make_config(f"{store_prefix}/data.zip", f"{store_prefix}/out", tmp_path / "cache-first", optimization={"max_steps": 8}, schedule={"save_total_limit": 1})
    first = run_training(config)
    assert first.model_location == f"{store_prefix}/out/model"
    assert remote.exists(f"{store_prefix}/out/model/model.safetensors")
    assert remote.exists(f"{store_prefix}/out/model/README.md")
    assert remote.list_children(f"{store_prefix}/out/checkpoints") == ["checkpoint-8"]
    summary = json.loads(remote.read_bytes(f"{store_prefix}/out/summary.json"))
    assert summary["steps"] == 8

    # A new process on another machine: empty cache, the same output location.
    second_config = make_config(f"{store_prefix}/data.zip", f"{store_prefix}/out", tmp_path / "cache-second", optimization={"max_steps": 8}, schedule={"save_total_limit": 1})
    # Listen on the package logger itself: the CLI's logging setup turns off propagation.
    package_logger = logging.getLogger("kubeclip")
    package_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="kubeclip"):
            second = run_training(second_config)
    finally:
        package_logger.removeHandler(caplog.handler)
    resumed = [record for record in caplog.records if record.getMessage() == "resuming from checkpoint"]
    assert [record.checkpoint for record in resumed] == ["checkpoint-8"]
    assert second.figures["steps"] == 8
    history = remote.read_bytes(f"{store_prefix}/out/metrics.jsonl").decode().splitlines()
    assert json.loads(history[0])["step"] == 0
