"""Start the operator: load credentials, serve metrics, and run Kopf with kubeclip's handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config as kube_config
from prometheus_client import start_http_server

from kubeclip.operator.context import OperatorContext
from kubeclip.operator.handlers import registry
from kubeclip.operator.settings import OperatorSettings

logger = logging.getLogger("kubeclip.operator")


#: Attributes every LogRecord has; any other attribute came from a call's ``extra``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the job's namespace/name when the record names one, and the call's ``extra`` fields."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        job = getattr(record, "job", None) or _kopf_object(record)
        if job:
            entry["job"] = job
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One line for people: time, level, logger, then the job's namespace/name in brackets when the record names one, and the message.

    The other ``extra`` fields appear only in JSON lines, because the messages already contain them in words.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - the name logging.Formatter defines
        job = getattr(record, "job", None) or _kopf_object(record)
        if not job:
            return super().formatMessage(record)
        return super().formatMessage(_with_message(record, f"[{job}] {record.message}"))


def _with_message(record: logging.LogRecord, message: str) -> logging.LogRecord:
    copied = logging.makeLogRecord(record.__dict__)
    copied.message = message
    return copied


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    # Kopf's own extras (k8s_ref, k8s_skip, its settings object) are left out; job names Kopf's object instead.
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("k8s_") and isinstance(value, (str, int, float, bool))
    }


def _kopf_object(record: logging.LogRecord) -> str | None:
    # Kopf's per-object loggers attach the object's reference as k8s_ref.
    reference = getattr(record, "k8s_ref", None)
    if isinstance(reference, dict) and reference.get("name"):
        return f"{reference.get('namespace', '')}/{reference['name']}".lstrip("/")
    return None


def configure_logging(log_format: str) -> None:
    """Send every log record to stderr as text or JSON lines; Kopf's own records only from WARNING up."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def load_home_client(kubeconfig: Path | None) -> client.ApiClient:
    """Create the ApiClient of the operator's own cluster from the given kubeconfig, else in-cluster credentials, else ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        # Kopf reads the same file through the kubernetes client's default loader.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def run(settings: OperatorSettings, kubeconfig: Path | None = None) -> int:
    """Run the operator until Kopf stops (SIGTERM or SIGINT); return the process exit code."""
    configure_logging(settings.log_format)
    home_client = load_home_client(kubeconfig)
    context = OperatorContext.create(settings, home_client)
    try:
        start_http_server(settings.metrics_port, addr=settings.bind_address, registry=context.metrics.registry)
    except OSError as error:
        logger.error(
            "cannot serve metrics on %s:%d: %s; another process (perhaps another kubeclip operator) uses the port, "
            "so pass a free one with --metrics-port, or stop the other operator: two operators would both reconcile every job",
            settings.bind_address, settings.metrics_port, error.strerror,
        )  # fmt: skip
        return 1
    logger.info(
        "kubeclip operator watching %s; metrics on :%d, health on :%d; trainer image %s",
        ", ".join(settings.namespaces) or "all namespaces", settings.metrics_port, settings.health_port, settings.trainer_image,
    )  # fmt: skip
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=True,
            memo=kopf.Memo(context=context),
            liveness_endpoint=f"http://{settings.bind_address}:{settings.health_port}/healthz",
        )
    )
    return 0
