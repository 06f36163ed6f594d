"""Start the operator: load credentials, serve metrics, and run Kopf with kubeclip's handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import kopf
from kubernetes import client, config as kube_config
from prometheus_client import start_http_server

from kubeclip.operator.context import OperatorContext
from kubeclip.operator.handlers import registry
from kubeclip.operator.settings import OperatorSettings

logger = logging.getLogger("kubeclip.operator")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the job's namespace/name when the record names one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        job = getattr(record, "job", None) or _kopf_object(record)
        if job:
            entry["job"] = job
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _kopf_object(record: logging.LogRecord) -> str | None:
    # Kopf's per-object loggers attach the object's reference as k8s_ref.
    reference = getattr(record, "k8s_ref", None)
    if isinstance(reference, dict) and reference.get("name"):
        return f"{reference.get('namespace', '')}/{reference['name']}".lstrip("/")
    return None


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def load_home_client(kubeconfig: Path | None) -> client.ApiClient:
    """An ApiClient for the operator's own cluster: the given kubeconfig, else in-cluster, else ~/.kube/config."""
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
    configure_logging(settings.log_format)
    home_client = load_home_client(kubeconfig)
    context = OperatorContext.create(settings, home_client)
    start_http_server(settings.metrics_port, addr=settings.bind_address, registry=context.metrics.registry)
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
