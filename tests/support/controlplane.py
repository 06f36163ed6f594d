"""Pytest fixtures that run the real local Kubernetes control plane and Prometheus on 127.0.0.1.

Registered for every test folder through ``pytest_plugins`` in ``tests/conftest.py``.
Tests that use them carry the ``controlplane`` marker.

- ``cluster``: one development cluster per session (``kubeclip.dev.cluster.up``), with
  simulated H100, A100, L40, L40S and CPU nodes; yields its kubeconfig path and an ApiClient.
- ``second_cluster``: another, independent cluster on other ports, standing for a
  user's bring-your-own cluster.
- ``prometheus_server``: a factory that starts Debian's Prometheus with given scrape
  configs and waits until it is ready.

The binaries come from ``scripts/install-control-plane.sh``; when one is missing the
fixtures fail with that instruction instead of building for tens of minutes. Each
cluster's logs stay in the session's pytest temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import binaries, cluster as dev_cluster, health, processes

INSTALL_HINT = "run scripts/install-control-plane.sh (needs Go and the Go module proxy; tens of minutes the first time) and run the tests again"
#: Seconds to wait for a namespace's default ServiceAccount, a pod phase and the like.
OBJECT_WAIT_TIMEOUT_SECONDS = 60.0
PROMETHEUS_START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ControlPlane:
    """A running development cluster: its admin kubeconfig and an ApiClient authenticated as admin."""

    name: str
    kubeconfig: Path
    api_client: client.ApiClient
    state: dev_cluster.ClusterState

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus: its base URL and the process record used to stop it."""

    url: str
    port: int
    record: processes.ProcessRecord


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Start one development cluster for the session and stop it at the end."""
    yield from _running_cluster(f"pytest-{os.getpid()}", tmp_path_factory)


@pytest.fixture(scope="session")
def second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Start a second, independent development cluster, standing for a bring-your-own cluster."""
    yield from _running_cluster(f"pytest-{os.getpid()}-byo", tmp_path_factory)


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[list[dict[str, Any]]], PrometheusServer]]:
    """Yield a factory that starts Prometheus with the given ``scrape_configs``; all are stopped after the session."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(f"prometheus is not on PATH; {INSTALL_HINT}")
    started: list[processes.ProcessRecord] = []

    def start(scrape_configs: list[dict[str, Any]]) -> PrometheusServer:
        server = start_prometheus(binary, scrape_configs, tmp_path_factory.mktemp("prometheus"))
        started.append(server.record)
        return server

    yield start
    for record in started:
        processes.stop_process(record)


def start_prometheus(binary: str, scrape_configs: list[dict[str, Any]], directory: Path) -> PrometheusServer:
    """Start Prometheus on a free port of 127.0.0.1 with ``scrape_configs`` and wait for /-/ready."""
    config_path = directory / "prometheus.yml"
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape_configs}
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary, f"--config.file={config_path}", f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn",
    ]  # fmt: skip
    record = processes.start_process("prometheus", command, directory / "prometheus.log")
    server = PrometheusServer(f"http://127.0.0.1:{port}", port, record)

    def ready() -> bool:
        if not processes.is_running(record):
            pytest.fail(f"prometheus exited during startup:\n{(directory / 'prometheus.log').read_text()}")
        return health.probe(f"{server.url}/-/ready").healthy

    wait_for(ready, f"prometheus at {server.url} is ready", timeout=PROMETHEUS_START_TIMEOUT_SECONDS)
    return server


def create_namespace(plane: ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    """Create a namespace and wait for its ``default`` ServiceAccount, which pods need before admission accepts them."""
    body = {"metadata": {"name": name, "labels": labels or {}}}
    plane.core.create_namespace(body)

    def has_default_service_account() -> bool:
        try:
            plane.core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_for(has_default_service_account, f"namespace {name} has its default ServiceAccount")


def wait_for(condition: Callable[[], bool], description: str, timeout: float = OBJECT_WAIT_TIMEOUT_SECONDS) -> None:
    """Poll ``condition`` every 0.2 s; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {description}")
        time.sleep(0.2)


def free_port() -> int:
    """Return a port on 127.0.0.1 that is free now; another process could take it before it is bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubectl(plane: ControlPlane, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the kubectl built with the control plane against ``plane``; give ``timeout`` above any --timeout passed to kubectl."""
    binary = binaries.binary_path("kubectl")
    if not binary.is_file():
        pytest.fail(f"kubectl is not installed at {binary}; {INSTALL_HINT}")
    command = [str(binary), f"--kubeconfig={plane.kubeconfig}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _running_cluster(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = binaries.missing_binaries(list(binaries.CONTROL_PLANE_COMPONENTS))
    if missing:
        pytest.fail(f"control-plane binaries missing: {', '.join(str(binaries.binary_path(name)) for name in missing)}; {INSTALL_HINT}")
    data_dir = tmp_path_factory.mktemp(name)
    try:
        state = dev_cluster.up(name, data_dir)
    except dev_cluster.ClusterError as error:
        pytest.fail(f"cluster {name} did not start: {error}")
    api_client = dev_cluster.new_api_client(state.kubeconfig)
    try:
        yield ControlPlane(name, state.kubeconfig, api_client, state)
    finally:
        api_client.close()
        # The data stays in the pytest temporary folder, so the logs can be read after a failure.
        dev_cluster.down(name, data_dir, keep_data=True)
