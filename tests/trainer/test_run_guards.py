"""Runs that must stop early with a clear error, and resumed runs that change settings."""

from __future__ import annotations

import socket

import pytest
import torch
from prometheus_client import CollectorRegistry
from safetensors.torch import load_file

from kubeclip.trainer.config import OptimizationConfig
from kubeclip.trainer.errors import ConfigError, StorageError, TrainerError
from kubeclip.trainer.loop import build_optimizer, build_scheduler
from kubeclip.trainer.metrics import TrainerMetrics
from kubeclip.trainer.outputs import apply_current_hyperparameters, exclusive_output
from kubeclip.trainer.run import run_training
from tests.support.training import make_config


def test_busy_metrics_port_fails_before_dataset_is_read(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = make_config(tmp_path / "missing.zip", tmp_path / "out", tmp_path / "cache", runtime={"metrics_port": port})
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
            run_training(config)


def test_output_in_use_by_another_run_rejected(tinted_zip, tmp_path):
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache")
    with exclusive_output(tmp_path / "out"):
        with pytest.raises(ConfigError, match=r"is in use by another kubeclip run"):
            run_training(config)


def test_unwritable_output_is_storage_error(tinted_zip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = make_config(tinted_zip, blocker / "out", tmp_path / "cache")
    with pytest.raises(StorageError, match=r"cannot write to the output folder .*choose another output location"):
        run_training(config)


def test_system_prompt_filling_token_budget_rejected(tinted_zip, tmp_path):
    long_prompt = "a long fixed instruction " * 20
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", data={"system_prompt": long_prompt})
    with pytest.raises(ConfigError, match=r"alone take \d+ tokens.*shorten spec.dataset.systemPrompt"):
        run_training(config)


def test_diverging_run_never_checkpoints_nan_weights(tinted_zip, tmp_path):
    config = make_config(
        tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"learning_rate": 1e4, "max_grad_norm": 0.0, "max_steps": 12}, schedule={"save_steps": 1, "save_total_limit": 20}
    )
    with pytest.raises(TrainerError, match=r"NaN|nan|inf"):
        run_training(config)
    checkpoints = sorted((tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    for folder in checkpoints:
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), folder.name


def test_resume_uses_new_learning_rate():
    model = torch.nn.Linear(4, 4)
    old = OptimizationConfig(learning_rate=1e-3, warmup_steps=0, lr_scheduler="Constant")
    optimizer = build_optimizer(model, old)
    scheduler = build_scheduler(optimizer, old, total_steps=10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()

    from tests.support.training import make_config as build

    new_config = build("data.zip", "out", "cache", optimization={"learning_rate": 5e-2, "warmup_steps": 0, "lr_scheduler": "Constant"})
    apply_current_hyperparameters(optimizer, scheduler, new_config, {"optimization": {"learning_rate": 1e-3}})
    assert [group["lr"] for group in optimizer.param_groups] == [5e-2, 5e-2]
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == [5e-2, 5e-2]


def test_recall_metric_leaves_out_chance_levels():
    metrics = TrainerMetrics(CollectorRegistry())
    metrics.record_evaluation(2.0, {"image_to_text_r5": 0.5, "image_to_text_chance_r5": 0.1, "text_to_image_r1": 0.2})
    directions = {sample.labels["direction"] for family in metrics.registry.collect() for sample in family.samples if "direction" in sample.labels}
    assert directions == {"image_to_text", "text_to_image"}
    assert not any(family.name.startswith("kubeclip_gpu") for family in metrics.registry.collect())
