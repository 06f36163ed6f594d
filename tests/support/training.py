"""Helpers for tests that train: a small real-photo dataset fixture, a free port and a config factory."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from kubeclip.trainer.config import (
    DataConfig,
    ModelConfig,
    OptimizationConfig,
    OutputConfig,
    RuntimeConfig,
    ScheduleConfig,
    TrainerConfig,
)
from tests.support.datasets import build_tinted_photos_zip


@pytest.fixture(scope="session")
def tinted_zip(tmp_path_factory) -> Path:
    return build_tinted_photos_zip(tmp_path_factory.mktemp("data") / "tinted.zip", count=48)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_config(dataset: Path | str, output: Path | str, cache_dir: Path, **overrides) -> TrainerConfig:
    """A Small-preset config that trains for a few seconds on CPU; override sections by keyword."""
    config = TrainerConfig(
        data=DataConfig(source=str(dataset), prompt_max_length=32, train_ratio=0.75, num_workers=0),
        output=OutputConfig(location=str(output)),
        model=ModelConfig(preset="Small", projection_dim=64),
        optimization=OptimizationConfig(epochs=2, train_batch_size=8, eval_batch_size=16, learning_rate=3e-4, warmup_steps=2, max_grad_norm=1.0, torch_dtype="float32"),
        schedule=ScheduleConfig(logging_steps=2, eval_steps=4, save_steps=4, save_total_limit=2),
        runtime=RuntimeConfig(metrics_port=0, metrics_address="127.0.0.1", cache_dir=str(cache_dir), device="cpu", progress_bar=False),
    )
    for section, changes in overrides.items():
        config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})
    return config
