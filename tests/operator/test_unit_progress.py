"""Progress reports turned into status fields: decimal strings, bad documents and bad values, without a cluster."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from kubeclip.api.status import CheckpointRecord, EvaluationResults, TrainingProgress
from kubeclip.operator.progress import (
    PROGRESS_KEY,
    checkpoints_status,
    decimal,
    evaluation_status,
    invalid_fields,
    progress_status,
    read_report,
)


def configmap(data: str | None, version: str = "1", name: str | None = None) -> dict[str, Any]:
    """A progress ConfigMap; each test gets its own name, because warnings are remembered per ConfigMap."""
    metadata = {"namespace": "jobs", "name": name or f"w-{uuid.uuid4().hex[:8]}-progress", "resourceVersion": version}
    return {"metadata": metadata, "data": {} if data is None else {PROGRESS_KEY: data}}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "kubeclip.operator.progress" and record.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (1.23456789, 4, "1.2346"),
        (12.30, 4, "12.3"),
        (2, 4, "2"),
        (0.5, 4, "0.5"),
        (41.25, 1, "41.2"),
        (-0.00001, 4, "0"),
        (0.0, 4, "0"),
        (-1.5, 4, "-1.5"),
        ("0.125", 4, "0.125"),
    ],
)
def test_decimal_formats_without_float_noise(value: Any, digits: int, expected: str) -> None:
    assert decimal(value, digits) == expected


def test_decimal_rejects_text() -> None:
    with pytest.raises(ValueError, match="could not convert"):
        decimal("fast")


def test_read_report_without_document_is_none() -> None:
    assert read_report(None) is None
    assert read_report(configmap(None)) is None
    assert read_report(configmap("")) is None


def test_read_report_parses_object() -> None:
    assert read_report(configmap(json.dumps({"step": 3, "state": "Running"}))) == {"step": 3, "state": "Running"}


def test_bad_json_warns_once_per_version(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    name = f"bad-{uuid.uuid4().hex[:8]}"
    assert read_report(configmap("{not json", version="5", name=name)) is None
    assert read_report(configmap("{not json", version="5", name=name)) is None
    assert len(warnings_of(caplog)) == 1
    assert "is not JSON" in warnings_of(caplog)[0]

    assert read_report(configmap("{still not json", version="6", name=name)) is None
    assert len(warnings_of(caplog)) == 2


def test_json_array_is_ignored_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    document = configmap("[1, 2]")
    document["metadata"]["labels"] = {"kubeclip.dev/job-namespace": "team", "kubeclip.dev/job-name": "photos"}
    assert read_report(document) is None
    assert len(warnings_of(caplog)) == 1
    assert "JSON list, not an object" in warnings_of(caplog)[0]
    assert f"ConfigMap jobs/{document['metadata']['name']}" in warnings_of(caplog)[0]
    assert caplog.records[-1].job == "team/photos"


def test_invalid_values_are_named_in_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    document = {"step": -1, "loss": "low", "updatedTime": "yesterday", "evaluation": {"loss": [1]}, "checkpoints": [{"name": "c"}]}
    assert read_report(configmap(json.dumps(document))) == document
    [warning] = warnings_of(caplog)
    for field in ("step=-1", "loss='low'", "updatedTime='yesterday'", "evaluation.loss=[1]", "checkpoints[0]="):
        assert field in warning


def test_progress_status_of_full_report() -> None:
    report = {"epoch": 2, "step": 30, "totalSteps": 120, "loss": 1.23456, "samplesPerSecond": 41.25, "etaSeconds": 90.7, "updatedTime": "2026-12-04T10:00:00Z"}
    progress = progress_status(report)
    assert progress == {
        "epoch": 2, "step": 30, "totalSteps": 120, "loss": "1.2346", "samplesPerSecond": "41.2",
        "estimatedRemainingSeconds": 90, "lastUpdatedTime": "2026-12-04T10:00:00Z", "progressPercentage": 25,
    }  # fmt: skip
    TrainingProgress.model_validate(progress)


def test_progress_without_step_is_none() -> None:
    assert progress_status({"loss": 1.0}) is None
    assert progress_status({"step": "ten"}) is None
    assert progress_status({"step": -3}) is None


def test_progress_percentage_capped_at_hundred() -> None:
    assert progress_status({"step": 130, "totalSteps": 120})["progressPercentage"] == 100


def test_progress_without_total_has_no_percentage() -> None:
    progress = progress_status({"step": 5, "totalSteps": 0})
    assert "progressPercentage" not in progress


def test_bad_progress_values_are_left_out() -> None:
    report = {"step": 7, "epoch": True, "loss": "low", "etaSeconds": float("inf"), "updatedTime": "2026-12-04 10:00", "totalSteps": -2}
    progress = progress_status(report)
    assert progress == {"step": 7}
    TrainingProgress.model_validate(progress)
    assert sorted(field.split("=")[0] for field in invalid_fields(report)) == ["epoch", "etaSeconds", "loss", "totalSteps", "updatedTime"]


def test_negative_eta_becomes_zero() -> None:
    assert progress_status({"step": 1, "etaSeconds": -4})["estimatedRemainingSeconds"] == 0


def test_diverged_loss_is_kept_as_nan() -> None:
    assert progress_status({"step": 1, "loss": float("nan")})["loss"] == "nan"


def test_evaluation_status_keeps_valid_figures() -> None:
    evaluation = evaluation_status({"evaluation": {"step": 25, "split": "validation", "loss": 2.5, "imageToTextRecallAt1": 0.125,
                                                   "textToImageRecallAt5": "high", "evaluatedTime": "2026-12-04T10:00:00+00:00"}})  # fmt: skip
    assert evaluation == {"split": "validation", "step": 25, "loss": "2.5", "imageToTextRecallAt1": "0.125", "evaluatedTime": "2026-12-04T10:00:00+00:00"}
    EvaluationResults.model_validate(evaluation)


def test_evaluation_status_without_evaluation_is_none() -> None:
    assert evaluation_status({}) is None
    assert evaluation_status({"evaluation": "soon"}) is None
    assert evaluation_status({"evaluation": {"loss": "x"}}) is None


def test_checkpoints_sorted_and_incomplete_left_out() -> None:
    report = {"checkpoints": [{"name": "checkpoint-50", "step": 50, "uri": "s3://b/c-50", "savedTime": "2026-12-04T10:00:00Z"},
                              {"name": "checkpoint-25", "step": 25, "savedTime": "noon"}, {"name": "", "step": 5}, {"step": 10}, "c-1"]}  # fmt: skip
    records = checkpoints_status(report)
    assert records == [{"name": "checkpoint-25", "step": 25}, {"name": "checkpoint-50", "step": 50, "uri": "s3://b/c-50", "savedTime": "2026-12-04T10:00:00Z"}]
    for record in records:
        CheckpointRecord.model_validate(record)


def test_checkpoints_not_a_list_is_empty() -> None:
    assert checkpoints_status({"checkpoints": {"name": "c", "step": 1}}) == []
