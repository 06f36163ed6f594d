"""Writes the trainer's progress document into its ConfigMap, from a background thread.

Created by ``kubeclip.trainer.progress.open_progress_report`` when the pod's environment
names a progress ConfigMap. It authenticates as the pod's ServiceAccount through the
Kubernetes client's in-cluster configuration: the API server address from
``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``, and ``token`` and
``ca.crt`` from ``KUBECLIP_SERVICE_ACCOUNT_DIR`` (the kubelet's mount point by default).
The token file is read again whenever it changes, because the kubelet rotates bound
tokens before they expire.

Each write is a JSON merge patch of ``data["progress.json"]``: the pod's Role allows
get, patch and update on this one ConfigMap and cannot create it. Only the newest
document waits, so a slow API server delays reports but never training. A failed write
is logged as a warning and never raised. Connection errors, 429 and 5xx answers are
retried with backoff. Other rejections (403, 404, 422) drop that document, and the next
one tries again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from kubeclip.trainer.progress import DOCUMENT_KEY

logger = logging.getLogger(__name__)

#: Folder with the ServiceAccount's ``token``, ``ca.crt`` and ``namespace``.
SERVICE_ACCOUNT_DIR_ENV = "KUBECLIP_SERVICE_ACCOUNT_DIR"
DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Seconds one PATCH request may take before it counts as failed and is retried.
REQUEST_TIMEOUT_SECONDS = 10.0
#: Backoff between retries of a transient failure: doubles from the first value up to the second.
RETRY_DELAY_SECONDS = (1.0, 8.0)
_MERGE_PATCH = "application/merge-patch+json"


class ProgressWriterError(Exception):
    """The in-cluster credentials or address are missing, so no write can succeed."""


class ServiceAccountToken:
    """The bearer token file, read again when its inode, size or modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._token = ""

    def refresh(self, configuration: client.Configuration) -> None:
        """Set the current token on ``configuration``; the client calls this before every request."""
        try:
            status = self.path.stat()
        except OSError:
            return  # keep the last token: a rotation replaces the file, and the request reports any failure
        signature = (status.st_ino, status.st_size, status.st_mtime_ns)
        if signature != self._signature:
            self._token = self.path.read_text(encoding="utf-8").strip()
            self._signature = signature
        configuration.api_key["BearerToken"] = f"Bearer {self._token}"


class ConfigMapWriter:
    """Writes each published document into ``data["progress.json"]`` of one ConfigMap, newest first.

    Args:
        core: The CoreV1Api to write with.
        namespace: Namespace of the ConfigMap.
        name: Name of the ConfigMap.
    """

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        self.core = core
        self.namespace = namespace
        self.name = name
        self._condition = threading.Condition()
        self._pending: str | None = None
        self._writing = False
        self._closing = False
        self._failures = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._write_loop, name="progress-configmap-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_service_account(cls, namespace: str, name: str, environ: Mapping[str, str] = os.environ) -> ConfigMapWriter:
        """Build a writer that authenticates with the pod's ServiceAccount.

        Raises:
            ProgressWriterError: the API server address, the token or the CA certificate is missing.
        """
        folder = Path(environ.get(SERVICE_ACCOUNT_DIR_ENV) or DEFAULT_SERVICE_ACCOUNT_DIR)
        configuration = client.Configuration()
        loader = InClusterConfigLoader(token_filename=str(folder / "token"), cert_filename=str(folder / "ca.crt"), try_refresh_token=False, environ=environ)
        try:
            loader.load_and_set(configuration)
        except ConfigException as error:
            raise ProgressWriterError(
                f"in-cluster credentials are incomplete: {error}; the token and ca.crt are read from {folder} "
                f"(set by {SERVICE_ACCOUNT_DIR_ENV}) and the API server address from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"
            ) from error
        configuration.refresh_api_key_hook = ServiceAccountToken(folder / "token").refresh
        return cls(client.CoreV1Api(client.ApiClient(configuration)), namespace, name)

    def publish(self, document: str) -> None:
        """Queue ``document`` for writing, replacing one that is still waiting."""
        with self._condition:
            self._pending = document
            self._condition.notify_all()

    def close(self, timeout: float) -> bool:
        """Write the waiting document, then stop the thread; False if that took longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._closing = True
            self._condition.notify_all()
            while self._pending is not None or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _write_loop(self) -> None:
        delay = RETRY_DELAY_SECONDS[0]
        while True:
            with self._condition:
                while self._pending is None and not self._closing:
                    self._condition.wait()
                if self._pending is None:
                    return
                document, self._pending, self._writing = self._pending, None, True
            retry = self._write(document)
            with self._condition:
                self._writing = False
                if retry and self._pending is None:
                    self._pending = document
                self._condition.notify_all()
                if retry:
                    # publish() and close() wake this early, so a newer document or the last one goes out sooner.
                    self._condition.wait(delay)
            delay = min(delay * 2, RETRY_DELAY_SECONDS[1]) if retry else RETRY_DELAY_SECONDS[0]

    def _write(self, document: str) -> bool:
        """PATCH the document; return True when the failure is transient and the write should be retried."""
        body = {"data": {DOCUMENT_KEY: document}}
        try:
            self.core.patch_namespaced_config_map(self.name, self.namespace, body, _content_type=_MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as error:
            self._record_failure(f"HTTP {error.status}: {_status_message(error)}")
            return error.status in (None, 0, 429) or error.status >= 500
        except Exception as error:  # noqa: BLE001 - connection errors and anything else must not end the writer thread
            self._record_failure(f"{type(error).__name__}: {error}")
            return True
        if self._failures:
            logger.info("progress report written again", extra={"configmap": self._reference, "failed_writes": self._failures})
        self._failures, self._last_error = 0, None
        return False

    def _record_failure(self, message: str) -> None:
        # A warning for the first failure and for each new error; repeats of the same one are counted.
        self._failures += 1
        level = logging.WARNING if message != self._last_error else logging.DEBUG
        logger.log(level, "writing the progress report failed", extra={"configmap": self._reference, "error": message, "failed_writes": self._failures})
        self._last_error = message

    @property
    def _reference(self) -> str:
        return f"{self.namespace}/{self.name}"


def _status_message(error: ApiException) -> str:
    """Return the message of the API server's Status object, which names the object and the rule that failed."""
    try:
        status: Any = json.loads(error.body or "")
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return str(error.reason)
