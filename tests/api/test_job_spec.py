"""The ClipTrainingJob spec: defaults, recommendations and the messages for invalid input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from kubeclip.api.loading import InvalidJobError, load_job_file, parse_job
from kubeclip.api.recommendations import resolve_settings

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "apiVersion": "kubeclip.dev/v1alpha1",
    "kind": "ClipTrainingJob",
    "metadata": {"name": "demo"},
    "spec": {"dataset": {"source": {"uri": "s3://bucket/data.zip", "region": "eu-west-1"}}, "infrastructure": {"gpuType": "H100"}},
}


def manifest(**spec_changes) -> dict:
    document = copy.deepcopy(MINIMAL)
    for path, value in spec_changes.items():
        node = document["spec"]
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return document


def test_defaults_match_product_table():
    job = parse_job(manifest())
    spec = job.spec
    assert spec.model.base_model == "FacebookAI/roberta-base"
    assert spec.model.vision_encoder == "openai/clip-vit-base-patch32"
    assert spec.dataset.lazy_tokenize is False
    assert spec.dataset.train_split_ratio == 0.9
    assert spec.dataset.validation_split_ratio == 0.1
    assert spec.training.per_device_eval_batch_size == 1
    assert (spec.training.save_steps, spec.training.save_total_limit) == (100, 2)
    assert (spec.training.eval_steps, spec.training.logging_steps) == (100, 5)
    assert spec.training.torch_dtype.value == "bfloat16"
    assert spec.training.data_loader_workers == 1
    assert spec.infrastructure.type.value == "Managed"


def test_recommendations_fill_unset_fields_for_roberta():
    settings = resolve_settings(parse_job(manifest()))
    assert settings.model_family == "roberta"
    assert settings.prompt_max_length == 128
    assert settings.learning_rate == "1e-5"
    assert settings.train_batch_size == 8
    assert "learningRate" in settings.recommended_fields


def test_explicit_setting_wins_over_recommendation():
    settings = resolve_settings(parse_job(manifest(training__learningRate="3e-5", dataset__promptMaxLength=64)))
    assert settings.learning_rate == "3e-5"
    assert settings.prompt_max_length == 64
    assert "learningRate" not in settings.recommended_fields


def test_clip_text_encoder_gets_77_tokens():
    settings = resolve_settings(parse_job(manifest(model__baseModel="openai/clip-vit-base-patch32")))
    assert settings.prompt_max_length == 77


def test_prompt_length_over_position_table_rejected():
    job = parse_job(manifest(model__baseModel="openai/clip-vit-base-patch32", dataset__promptMaxLength=128))
    with pytest.raises(ValueError, match=r"holds at most 77 positions; set promptMaxLength to 77 or less"):
        resolve_settings(job)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"infrastructure__numNodes": 2}, r"numNodes: distributed training is not supported.*set 1"),
        ({"infrastructure__gpusPerNode": 4}, r"gpusPerNode: distributed training is not supported"),
        ({"model__lora": {"r": 8}}, r"LoRA is not supported.*remove spec.model.lora"),
        ({"infrastructure__gpuType": "L40S"}, r"gpuType: Input should be 'H100', 'A100' or 'L40'"),
        ({"dataset__trainSplitRatio": 0.8}, r"must sum to 1"),
        ({"dataset__promptTemplate": "a photo"}, r"must contain \{caption\} exactly once"),
        ({"training__learningRate": "fast"}, r"learningRate: .fast. is not a positive decimal number"),
        ({"training__learningRate": 0.0005}, r"learningRate: write the number as a quoted string, such as \"0.0005\""),
        ({"training__perDeviceTrainBatchSize": 1}, r"perDeviceTrainBatchSize: Input should be greater than or equal to 2"),
        ({"training__epoch": 3}, r"training.epoch: unknown field"),
        ({"dataset__datasetRef": {"name": "flickr"}}, r"set exactly one of spec.dataset.source"),
    ],
)
def test_invalid_spec_message_names_field_and_fix(changes, message):
    with pytest.raises(InvalidJobError, match=message):
        parse_job(manifest(**changes))


def test_invalid_name_rejected():
    document = manifest()
    document["metadata"]["name"] = "Demo_Job"
    with pytest.raises(InvalidJobError, match="not a valid name"):
        parse_job(document)


def test_example_job_file_is_valid():
    job = load_job_file(REPO / "examples" / "local-job.yaml")
    assert job.spec.model.preset is not None
    assert resolve_settings(job).learning_rate == "5e-4"


def test_job_file_not_yaml_reports_path(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("spec: [unclosed", encoding="utf-8")
    with pytest.raises(InvalidJobError, match=r"job.yaml is not valid YAML"):
        load_job_file(path)


def test_job_file_without_job_document(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("kind: ConfigMap\n", encoding="utf-8")
    with pytest.raises(InvalidJobError, match="exactly one document of kind ClipTrainingJob, found 0"):
        load_job_file(path)
