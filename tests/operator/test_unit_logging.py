"""Operator log lines: the job's namespace/name and extra fields in JSON and text, and API errors in one line."""

from __future__ import annotations

import json
import logging

from kubernetes.client.exceptions import ApiException

from kubeclip.operator.problems import describe_api_error
from kubeclip.operator.runner import JsonFormatter, TextFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("kubeclip.operator.reconciler", logging.WARNING, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_json_line_carries_job_and_extra() -> None:
    line = json.loads(JsonFormatter().format(record("Scheduled is %s", "False", job="team/photos", reason="SecretNotFound")))
    assert line["message"] == "Scheduled is False"
    assert line["job"] == "team/photos"
    assert line["reason"] == "SecretNotFound"
    assert line["level"] == "warning"
    assert line["time"].endswith("Z")


def test_json_line_names_kopf_object() -> None:
    line = json.loads(JsonFormatter().format(record("handler failed", k8s_ref={"namespace": "team", "name": "photos"}, k8s_skip=False)))
    assert line["job"] == "team/photos"
    assert "k8s_skip" not in line
    assert "k8s_ref" not in line


def test_json_line_leaves_out_objects() -> None:
    line = json.loads(JsonFormatter().format(record("started", settings=object())))
    assert "settings" not in line


def test_text_line_puts_job_before_message() -> None:
    line = TextFormatter().format(record("trainer Job created", job="team/photos", cluster="managed"))
    assert line.endswith("WARNING kubeclip.operator.reconciler: [team/photos] trainer Job created")


def test_text_line_without_job_is_plain() -> None:
    assert TextFormatter().format(record("operator started")).endswith("kubeclip.operator.reconciler: operator started")


def test_api_error_with_status_message() -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps({"kind": "Status", "message": 'ClipTrainingJob.kubeclip.dev "photos" is invalid: status.progress.step: Invalid value: -1'})
    assert describe_api_error(error) == '422 Unprocessable Entity: ClipTrainingJob.kubeclip.dev "photos" is invalid: status.progress.step: Invalid value: -1'


def test_api_error_without_body() -> None:
    assert describe_api_error(ApiException(status=503, reason="Service Unavailable")) == "503 Service Unavailable"
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = "<html>proxy error</html>"
    assert describe_api_error(error) == "500 Internal Server Error"
