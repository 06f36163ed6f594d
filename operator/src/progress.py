"""Turn the trainer's progress report (its ConfigMap, see docs/operator-design.md) into status fields.

Figures become decimal strings, as the status schema keeps them, rounded to what a
person reads. The trainer writes the report, and a bad report must not stop status
updates from the pod itself. A document that is not a JSON object is ignored. A field
whose value the status schema would reject (a wrong type, a negative count, a time that
is not RFC 3339) is left out, because the API server rejects a whole status patch for
one such field. Both cases log one warning per version of the ConfigMap.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubeclip.builders.naming import JOB_NAME_LABEL, JOB_NAMESPACE_LABEL

logger = logging.getLogger(__name__)

PROGRESS_KEY = "progress.json"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
#: ConfigMaps whose latest bad version was already logged; the oldest are dropped beyond this count.
_WARNED_MAX = 1024
_warned: OrderedDict[tuple[str, str], str | None] = OrderedDict()
_warned_lock = threading.Lock()


def decimal(value: Any, digits: int = 4) -> str:
    """Format a number with at most ``digits`` digits after the decimal point, without a float's noise: 0.1234, 12.3.

    Raises:
        ValueError: ``value`` is not a number.
        TypeError: ``value`` is neither a number nor a string.
    """
    number = float(value)
    text = f"{number:.{digits}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _count(value: Any) -> int | None:
    """Convert a non-negative number, rounded down; None for anything else, booleans included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _figure(digits: int) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        # NaN and infinity are kept, because "nan" for a loss shows the user that training diverged.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return decimal(value, digits)

    return convert


def _timestamp(value: Any) -> str | None:
    """Keep an RFC 3339 time, which the status schema's date-time format requires; None otherwise."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        # The pattern admits month 13 or second 61; the parser does not.
        datetime.fromisoformat(value)
    except ValueError:
        return None
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: Any) -> int | None:
    """Convert a number of seconds, rounded down; a negative estimate becomes 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(0, int(value))


#: status.progress field, report field and converter.
_PROGRESS_FIELDS = (
    ("epoch", "epoch", _count),
    ("step", "step", _count),
    ("totalSteps", "totalSteps", _count),
    ("loss", "loss", _figure(4)),
    ("samplesPerSecond", "samplesPerSecond", _figure(1)),
    ("estimatedRemainingSeconds", "etaSeconds", _seconds),
    ("lastUpdatedTime", "updatedTime", _timestamp),
)
#: status.evaluation field (the same name in the report) and converter.
_EVALUATION_FIELDS = (
    ("split", _text),
    ("step", _count),
    ("loss", _figure(4)),
    ("imageToTextRecallAt1", _figure(4)),
    ("imageToTextRecallAt5", _figure(4)),
    ("textToImageRecallAt1", _figure(4)),
    ("textToImageRecallAt5", _figure(4)),
    ("evaluatedTime", _timestamp),
)
#: Checkpoint record field (the same name in the report) and converter; name and step are required.
_CHECKPOINT_FIELDS = (("name", _text), ("step", _count), ("uri", _text), ("savedTime", _timestamp))


def read_report(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the parsed report of a progress ConfigMap, or None when there is none yet or it is not a JSON object."""
    if configmap is None:
        return None
    raw = (configmap.get("data") or {}).get(PROGRESS_KEY)
    if not raw:
        return None
    try:
        report = json.loads(raw)
    except json.JSONDecodeError as error:
        _warn_once(configmap, f"{PROGRESS_KEY} is not JSON ({error}); ignoring it until the trainer writes it again")
        return None
    if not isinstance(report, dict):
        _warn_once(configmap, f"{PROGRESS_KEY} is a JSON {type(report).__name__}, not an object; ignoring it until the trainer writes it again")
        return None
    invalid = invalid_fields(report)
    if invalid:
        _warn_once(configmap, f"{PROGRESS_KEY} has invalid values, which the status leaves out: {', '.join(invalid)}")
    return report


def invalid_fields(report: dict[str, Any]) -> list[str]:
    """Name the report fields that are present but have a value the status cannot take, as ``path=value``."""
    found = [f"{key}={report[key]!r}" for _, key, convert in _PROGRESS_FIELDS if report.get(key) is not None and convert(report[key]) is None]
    evaluation = report.get("evaluation")
    if isinstance(evaluation, dict):
        found += [
            f"evaluation.{key}={evaluation[key]!r}" for key, convert in _EVALUATION_FIELDS if evaluation.get(key) is not None and convert(evaluation[key]) is None
        ]
    for index, checkpoint in enumerate(report.get("checkpoints") or []):
        if _checkpoint_record(checkpoint) is None:
            found.append(f"checkpoints[{index}]={checkpoint!r}")
    return found


def progress_status(report: dict[str, Any]) -> dict[str, Any] | None:
    """Build the ``status.progress`` object of a report, or None when the report has no valid step yet."""
    progress = {field: value for field, key, convert in _PROGRESS_FIELDS if (value := convert(report.get(key))) is not None}
    if "step" not in progress:
        return None
    if progress.get("totalSteps"):
        progress["progressPercentage"] = min(100, 100 * progress["step"] // progress["totalSteps"])
    return progress


def evaluation_status(report: dict[str, Any]) -> dict[str, Any] | None:
    """Build the ``status.evaluation`` object of a report, or None when it has no valid evaluation."""
    evaluation = report.get("evaluation")
    if not isinstance(evaluation, dict):
        return None
    result = {key: value for key, convert in _EVALUATION_FIELDS if (value := convert(evaluation.get(key))) is not None}
    return result or None


def checkpoints_status(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Build ``status.checkpoints`` from a report, oldest first, leaving out records without a valid name and step."""
    checkpoints = report.get("checkpoints")
    if not isinstance(checkpoints, list):
        return []
    records = [record for checkpoint in checkpoints if (record := _checkpoint_record(checkpoint)) is not None]
    return sorted(records, key=lambda record: record["step"])


def _checkpoint_record(checkpoint: Any) -> dict[str, Any] | None:
    if not isinstance(checkpoint, dict):
        return None
    record = {key: value for key, convert in _CHECKPOINT_FIELDS if (value := convert(checkpoint.get(key))) is not None}
    return record if "name" in record and "step" in record else None


def _warn_once(configmap: dict[str, Any], problem: str) -> None:
    """Log a warning about a report, once per ConfigMap version, because every pass of the job reads it again."""
    metadata = configmap.get("metadata") or {}
    key = (metadata.get("namespace", ""), metadata.get("name", ""))
    version = metadata.get("resourceVersion")
    with _warned_lock:
        if key in _warned and _warned[key] == version:
            return
        _warned[key] = version
        _warned.move_to_end(key)
        while len(_warned) > _WARNED_MAX:
            _warned.popitem(last=False)
    labels = metadata.get("labels") or {}
    extra = {"configmap": f"{key[0]}/{key[1]}", "resource_version": version}
    if labels.get(JOB_NAME_LABEL):
        extra["job"] = f"{labels.get(JOB_NAMESPACE_LABEL, '')}/{labels[JOB_NAME_LABEL]}"
    logger.warning("invalid progress report in ConfigMap %s/%s: %s", key[0], key[1], problem, extra=extra)
