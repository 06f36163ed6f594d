"""Turn the trainer's progress report (its ConfigMap, see docs/operator-design.md) into status fields.

Figures become decimal strings, as the status schema keeps them, rounded to what a
person reads. A report that does not parse is ignored with a warning: the trainer
writes it, and a bad report must not stop status updates from the pod itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

PROGRESS_KEY = "progress.json"
_RECALL_KEYS = ("imageToTextRecallAt1", "imageToTextRecallAt5", "textToImageRecallAt1", "textToImageRecallAt5")


def read_report(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the parsed report of a progress ConfigMap, or None when there is none yet."""
    if configmap is None:
        return None
    raw = (configmap.get("data") or {}).get(PROGRESS_KEY)
    if not raw:
        return None
    try:
        report = json.loads(raw)
    except json.JSONDecodeError as error:
        logger.warning("progress report in ConfigMap %s is not JSON (%s); ignoring it", configmap["metadata"]["name"], error)
        return None
    return report if isinstance(report, dict) else None


def progress_status(report: dict[str, Any]) -> dict[str, Any] | None:
    """The ``status.progress`` object of a report, or None when the report has no step yet."""
    if report.get("step") is None:
        return None
    step, total = int(report["step"]), report.get("totalSteps")
    progress: dict[str, Any] = {"step": step}
    if report.get("epoch") is not None:
        progress["epoch"] = int(report["epoch"])
    if total:
        progress["totalSteps"] = int(total)
        progress["progressPercentage"] = min(100, int(100 * step / int(total)))
    if report.get("loss") is not None:
        progress["loss"] = decimal(report["loss"])
    if report.get("samplesPerSecond") is not None:
        progress["samplesPerSecond"] = decimal(report["samplesPerSecond"], digits=1)
    if report.get("etaSeconds") is not None:
        progress["estimatedRemainingSeconds"] = max(0, int(report["etaSeconds"]))
    if report.get("updatedTime"):
        progress["lastUpdatedTime"] = report["updatedTime"]
    return progress


def evaluation_status(report: dict[str, Any]) -> dict[str, Any] | None:
    evaluation = report.get("evaluation")
    if not isinstance(evaluation, dict):
        return None
    result: dict[str, Any] = {}
    if evaluation.get("step") is not None:
        result["step"] = int(evaluation["step"])
    if evaluation.get("loss") is not None:
        result["loss"] = decimal(evaluation["loss"])
    for key in _RECALL_KEYS:
        if evaluation.get(key) is not None:
            result[key] = decimal(evaluation[key])
    if evaluation.get("evaluatedTime"):
        result["evaluatedTime"] = evaluation["evaluatedTime"]
    return result or None


def checkpoints_status(report: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for checkpoint in report.get("checkpoints") or []:
        if not isinstance(checkpoint, dict) or not checkpoint.get("name") or checkpoint.get("step") is None:
            continue
        record = {"name": str(checkpoint["name"]), "step": int(checkpoint["step"])}
        for key in ("uri", "savedTime"):
            if checkpoint.get(key):
                record[key] = str(checkpoint[key])
        records.append(record)
    return sorted(records, key=lambda record: record["step"])


def decimal(value: Any, digits: int = 4) -> str:
    """Format a number with ``digits`` significant decimals, without a float's noise: 0.1234, 12.3."""
    number = float(value)
    text = f"{number:.{digits}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
