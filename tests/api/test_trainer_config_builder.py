"""The builder from a job spec to the trainer config."""

from __future__ import annotations

import json

import pytest

from kubeclip.api.loading import parse_job
from kubeclip.api.recommendations import resolve_settings
from kubeclip.builders.trainer_config import build_trainer_config
from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import ConfigError
from tests.api.test_job_spec import manifest


def build(**changes) -> TrainerConfig:
    job = parse_job(manifest(**changes))
    return build_trainer_config(job, resolve_settings(job), output_location="s3://out/run")


def test_builder_carries_resolved_values():
    config = build(training__learningRate="2e-5", dataset__systemPrompt="Photo:")
    assert config.optimization.learning_rate == 2e-5
    assert config.data.system_prompt == "Photo:"
    assert config.data.prompt_max_length == 128
    assert config.job.experiment == "demo"
    assert config.output.location == "s3://out/run"


def test_trainer_config_round_trips_through_json():
    config = build()
    assert TrainerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_trainer_config_rejects_unknown_keys():
    raw = build().to_dict()
    raw["optimization"]["learning_rat"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown keys \['learning_rat'\] in trainer config section 'optimization'"):
        TrainerConfig.from_dict(raw)


def test_dataset_ref_must_be_resolved_first():
    document = manifest()
    document["spec"]["dataset"] = {"datasetRef": {"name": "flickr"}}
    job = parse_job(document)
    with pytest.raises(ValueError, match="must be resolved to a source"):
        build_trainer_config(job, resolve_settings(job), output_location="out")
