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
    # Listen on the package logger itself, because the CLI's logging setup turns off
    # propagation; with propagation on, each record then arrives twice.
    package_logger = logging.getLogger("kubeclip")
    package_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="kubeclip"):
            second = run_training(second_config)
    finally:
        package_logger.removeHandler(caplog.handler)
    resumed = [record for record in caplog.records if record.getMessage() == "resuming from checkpoint"]
    assert {record.checkpoint for record in resumed} == {"checkpoint-8"}
    assert second.figures["steps"] == 8
    history = remote.read_bytes(f"{store_prefix}/out/metrics.jsonl").decode().splitlines()
    assert json.loads(history[0])["step"] == 0


@pytest.mark.objectstore
def test_encoders_load_from_object_store_directory(store_prefix, tmp_path):
    from tests.trainer.test_model import CAPTIONS
    from transformers import CLIPVisionConfig, CLIPVisionModel, RobertaModel

    from kubeclip.trainer import presets
    from kubeclip.trainer.config import ModelConfig
    from kubeclip.trainer.model import build_dual_encoder

    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(tmp_path / "vision")
    presets.build_small_image_processor().save_pretrained(tmp_path / "vision")
    tokenizer = presets.train_small_tokenizer(CAPTIONS, max_length=40)
    RobertaModel(presets.build_small_text_config(len(tokenizer), 40)).save_pretrained(tmp_path / "text")
    tokenizer.save_pretrained(tmp_path / "text")
    remote.upload_directory(tmp_path / "vision", f"{store_prefix}/encoders/vision")
    remote.upload_directory(tmp_path / "text", f"{store_prefix}/encoders/text")

    config = ModelConfig(vision_encoder=f"{store_prefix}/encoders/vision", text_encoder=f"{store_prefix}/encoders/text", projection_dim=16)
    bundle = build_dual_encoder(config, prompt_max_length=32, cache_dir=tmp_path / "cache", training_texts=[])
    assert bundle.model.config.vision_config.hidden_size == 32
    assert any((tmp_path / "cache" / "models").rglob("model.safetensors"))
