"""Read a ClipTrainingJob manifest from a YAML file and turn validation errors into plain messages."""

from __future__ import annotations

from pathlib import Path

import pydantic
import yaml

from kubeclip.api.job import ClipTrainingJob


class InvalidJobError(ValueError):
    """A job file that cannot be used; the message lists every problem with its field path."""


def load_job_file(path: Path) -> ClipTrainingJob:
    """Parse and validate the ClipTrainingJob in a YAML (or JSON) file.

    Raises:
        InvalidJobError: the file is missing, is not YAML, contains no single ClipTrainingJob,
            or a field is invalid.
    """
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except OSError as err:
        raise InvalidJobError(f"cannot read job file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InvalidJobError(f"job file {path} is not valid YAML: {err}") from err
    jobs = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "ClipTrainingJob"]
    if len(jobs) != 1:
        raise InvalidJobError(f"job file {path} must contain exactly one document of kind ClipTrainingJob, found {len(jobs)}")
    return parse_job(jobs[0], source=str(path))


def parse_job(manifest: dict[str, object], source: str = "manifest") -> ClipTrainingJob:
    """Validate a manifest already parsed into a dict."""
    try:
        return ClipTrainingJob.model_validate(manifest)
    except pydantic.ValidationError as err:
        raise InvalidJobError(f"{source} is not a valid ClipTrainingJob:\n{format_validation_error(err)}") from err


def format_validation_error(err: pydantic.ValidationError) -> str:
    """Render each pydantic error as one line: the field path in API spelling, the problem, the value."""
    lines = []
    for error in err.errors():
        path = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field; check the spelling against `kubectl explain cliptrainingjob.spec`"
        lines.append(f"  {path or '(document)'}: {message} (got {error.get('input')!r})")
    return "\n".join(lines)
