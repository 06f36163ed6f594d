"""The progress report of a trainer pod: the JSON document that the operator copies into the job's status.

``kubeclip.trainer.__main__`` opens the report with ``open_progress_report`` when the
pod's environment names a progress ConfigMap (``KUBECLIP_PROGRESS_CONFIGMAP``), passes
it to ``run_training`` as a sink of the ``Reporter`` and ends it with
``finish_succeeded`` or ``finish_failed``. The report builds the document from the
same entries that the Reporter logs and records, and hands it to a publisher
(``kubeclip.trainer.progress_configmap.ConfigMapWriter``) that writes it in the
background. Step updates are published at most once per interval. The start,
evaluations, checkpoints and the end are published at once.

Without ``KUBECLIP_PROGRESS_CONFIGMAP`` no report is opened and the Kubernetes client
is never imported, so laptop runs behave as before.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import TrainingInterrupted
from kubeclip.trainer.storage import paths

logger = logging.getLogger(__name__)

#: Name of the ConfigMap to write; without it there is no progress report.
CONFIGMAP_ENV = "KUBECLIP_PROGRESS_CONFIGMAP"
#: Namespace of that ConfigMap (the pod's own, from the downward API).
NAMESPACE_ENV = "KUBECLIP_PROGRESS_NAMESPACE"
#: Name of the pod, written into the document so the operator can tell retries apart.
POD_NAME_ENV = "KUBECLIP_POD_NAME"
#: Minimum seconds between two step updates.
INTERVAL_ENV = "KUBECLIP_PROGRESS_INTERVAL_SECONDS"
DEFAULT_INTERVAL_SECONDS = 10.0
#: Seconds that ``close`` waits for the last write before the process exits.
FLUSH_TIMEOUT_SECONDS = 10.0
#: Key of the ConfigMap that contains the document.
DOCUMENT_KEY = "progress.json"
#: Characters of an error message kept in the document. A dataset error can list every
#: invalid line, and the ConfigMap, like every object, must stay under 1 MiB.
MAX_ERROR_MESSAGE_CHARACTERS = 4096

STARTING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "Starting", "Running", "Succeeded", "Failed", "Interrupted"

#: The evaluation's recall keys (``kubeclip.trainer.evaluation.score_embeddings``) and their document fields.
_RECALL_FIELDS = {
    "image_to_text_r1": "imageToTextRecallAt1",
    "image_to_text_r5": "imageToTextRecallAt5",
    "text_to_image_r1": "textToImageRecallAt1",
    "text_to_image_r5": "textToImageRecallAt5",
}
#: Fields of a "train" history entry and their document fields.
_TRAIN_FIELDS = {"epoch": "epoch", "loss": "loss", "learning_rate": "learningRate", "samples_per_second": "samplesPerSecond"}


class ProgressPublisher(Protocol):
    """The destination of each document version that is due: ``ConfigMapWriter``, or a list in tests."""

    def publish(self, document: str) -> None:
        """Queue ``document`` (JSON text) for writing; must return at once."""

    def close(self, timeout: float) -> bool:
        """Write what is queued within ``timeout`` seconds; return False if that did not finish."""


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(moment: datetime.datetime) -> str:
    """Format ``moment`` as RFC 3339 in UTC with seconds, the form of Kubernetes timestamps."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReport:
    """A ``Reporter`` sink that keeps the progress document and publishes it when due.

    Args:
        publisher: Receives the JSON text of each version to write.
        pod: The pod name written into the document, or None.
        output_location: The trainer's output location, under which checkpoint URIs are
            formed; None leaves ``uri`` out.
        save_total_limit: Checkpoints the trainer keeps; older ones leave the list as the
            trainer deletes them.
        interval_seconds: Minimum time between two published step updates.
        clock: Monotonic seconds, for the interval.
        now: Wall-clock time, for ``updatedTime``, ``evaluatedTime`` and ``savedTime``.
    """

    def __init__(
        self,
        publisher: ProgressPublisher,
        *,
        pod: str | None,
        output_location: str | None,
        save_total_limit: int,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self.publisher = publisher
        self.output_location = output_location
        self.save_total_limit = save_total_limit
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.now = now
        self._document: dict[str, Any] = {"state": STARTING}
        if pod:
            self._document["pod"] = pod
        self._checkpoints: list[dict[str, Any]] = []
        self._last_published: float | None = None
        self._finished = False
        self._publish(force=True)

    @property
    def document(self) -> dict[str, Any]:
        """A copy of the current document, including changes not yet published."""
        return json.loads(json.dumps(self._document))

    # -- the Reporter's sink interface ------------------------------------------------

    def begin(self, *, total_steps: int, history: list[dict[str, Any]], resumed_checkpoint: str | None) -> None:
        """Switch to Running; a resumed run starts from the figures of its history."""
        for entry in history:
            self._apply(entry)
        if resumed_checkpoint is not None:
            self._add_checkpoint(resumed_checkpoint, _checkpoint_step(resumed_checkpoint), saved_time=None)
            self._document["step"] = max(self._document.get("step", 0), _checkpoint_step(resumed_checkpoint))
        self._document.update(state=RUNNING, totalSteps=total_steps)
        self._publish(force=True)

    def receive(self, entry: dict[str, Any]) -> None:
        """Take one Reporter entry: step and train entries are throttled, the others are published at once."""
        if self._finished:
            return
        self._apply(entry, moment=self.now())
        self._publish(force=entry["kind"] in ("eval", "checkpoint"))

    # -- the end of the run -------------------------------------------------------------

    def finish_succeeded(self, model_uri: str) -> None:
        """Publish the Succeeded state with the final model's location."""
        self._finish({"state": SUCCEEDED, "modelUri": model_uri})

    def finish_failed(self, error: BaseException, exit_code: int) -> None:
        """Publish Interrupted for a stop signal, else Failed with the error's class, exit code and text."""
        if isinstance(error, TrainingInterrupted):
            self._finish({"state": INTERRUPTED})
            return
        message = str(error)
        if len(message) > MAX_ERROR_MESSAGE_CHARACTERS:
            message = message[: MAX_ERROR_MESSAGE_CHARACTERS - 1] + "…"
        self._finish({"state": FAILED, "error": {"reason": type(error).__name__, "exitCode": exit_code, "message": message}})

    def close(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> bool:
        """Wait up to ``timeout`` seconds for the last document to be written; False if it was not."""
        flushed = self.publisher.close(timeout)
        if not flushed:
            logger.warning("the last progress report was not written in time", extra={"timeout_seconds": timeout})
        return flushed

    # -- building the document ---------------------------------------------------------

    def _apply(self, entry: Mapping[str, Any], moment: datetime.datetime | None = None) -> None:
        """Fold ``entry`` into the document; ``moment`` is when it happened, None for resumed history."""
        kind = entry.get("kind")
        if kind in ("step", "train"):
            self._document["step"] = entry["step"]
        if kind == "train":
            self._apply_train(entry)
        elif kind == "eval" and entry.get("split") == "validation":
            self._apply_evaluation(entry, moment)
        elif kind == "checkpoint":
            self._add_checkpoint(entry["name"], entry["step"], moment)

    def _apply_train(self, entry: Mapping[str, Any]) -> None:
        for key, field in _TRAIN_FIELDS.items():
            _set_finite(self._document, field, entry.get(key))
        remaining = entry.get("estimated_remaining_seconds")
        if isinstance(remaining, (int, float)) and math.isfinite(remaining):
            self._document["etaSeconds"] = round(remaining)
        else:
            self._document.pop("etaSeconds", None)

    def _apply_evaluation(self, entry: Mapping[str, Any], evaluated_time: datetime.datetime | None) -> None:
        evaluation: dict[str, Any] = {"step": entry["step"], "split": "validation"}
        _set_finite(evaluation, "loss", entry.get("loss"))
        for key, field in _RECALL_FIELDS.items():
            _set_finite(evaluation, field, entry.get(key))
        if evaluated_time is not None:
            evaluation["evaluatedTime"] = format_time(evaluated_time)
        self._document["evaluation"] = evaluation

    def _add_checkpoint(self, name: str, step: int, saved_time: datetime.datetime | None) -> None:
        # Mirrors CheckpointStore's rotation: the newest save_total_limit checkpoints by step stay.
        checkpoint: dict[str, Any] = {"name": name, "step": step}
        if self.output_location is not None:
            checkpoint["uri"] = paths.join(self.output_location, "checkpoints", name)
        if saved_time is not None:
            checkpoint["savedTime"] = format_time(saved_time)
        retained = [existing for existing in self._checkpoints if existing["name"] != name] + [checkpoint]
        retained.sort(key=lambda item: item["step"])
        self._checkpoints = retained[-self.save_total_limit :]
        self._document["checkpoints"] = self._checkpoints

    def _finish(self, changes: dict[str, Any]) -> None:
        if self._finished:
            logger.debug("the progress report already has its final state", extra={"state": self._document["state"]})
            return
        self._finished = True
        self._document.update(changes)
        self._publish(force=True)

    def _publish(self, *, force: bool) -> None:
        now = self.clock()
        if not force and self._last_published is not None and now - self._last_published < self.interval_seconds:
            return
        self._last_published = now
        self._document["updatedTime"] = format_time(self.now())
        self.publisher.publish(json.dumps(self._document, sort_keys=True))


def _set_finite(target: dict[str, Any], field: str, value: Any) -> None:
    """Set ``field`` to a finite number, or remove it: JSON has no NaN or infinity."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        target[field] = value
    else:
        target.pop(field, None)


def _checkpoint_step(name: str) -> int:
    return int(name.rsplit("-", 1)[-1])


def read_interval(environ: Mapping[str, str]) -> float:
    """Return ``KUBECLIP_PROGRESS_INTERVAL_SECONDS``, or the default with a warning when it is not a number of 0 or more."""
    raw = environ.get(INTERVAL_ENV)
    if raw is None or raw == "":
        return DEFAULT_INTERVAL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        logger.warning(
            "invalid progress interval; using the default",
            extra={"variable": INTERVAL_ENV, "value": raw, "default_seconds": DEFAULT_INTERVAL_SECONDS},
        )
        return DEFAULT_INTERVAL_SECONDS
    return value


def open_progress_report(config: TrainerConfig | None, environ: Mapping[str, str] = os.environ) -> ProgressReport | None:
    """Open the progress report that the pod's environment requests, and publish the Starting state.

    Args:
        config: The trainer config, for the output location and checkpoint limit; None
            when it could not be read (only the failure is reported then).
        environ: The process environment.

    Returns:
        None when ``KUBECLIP_PROGRESS_CONFIGMAP`` is not set, or when the in-cluster
        credentials are missing (logged as a warning): training goes on without reports.
    """
    configmap = environ.get(CONFIGMAP_ENV)
    if not configmap:
        return None
    namespace = environ.get(NAMESPACE_ENV)
    if not namespace:
        logger.warning("progress reports are off because the namespace is not set", extra={"variable": NAMESPACE_ENV, "configmap": configmap})
        return None

    # Imported here so runs without a progress ConfigMap never load the Kubernetes client.
    from kubeclip.trainer.progress_configmap import ConfigMapWriter, ProgressWriterError

    try:
        writer = ConfigMapWriter.from_service_account(namespace, configmap, environ)
    except ProgressWriterError as error:
        logger.warning("progress reports are off", extra={"configmap": f"{namespace}/{configmap}", "error": str(error)})
        return None
    return ProgressReport(
        writer,
        pod=environ.get(POD_NAME_ENV),
        output_location=config.output.location if config is not None else None,
        save_total_limit=config.schedule.save_total_limit if config is not None else 1,
        interval_seconds=read_interval(environ),
    )
