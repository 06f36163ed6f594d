"""Tests of ``kubeclip dev cluster up|status|down`` as a user runs them, and of the Prometheus fixture."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubeclip.dev import binaries, cluster as dev_cluster, processes
from tests.support.controlplane import INSTALL_HINT, PrometheusServer, wait_for

pytestmark = pytest.mark.controlplane


def _kubeclip(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kubeclip.cli.main", "dev", "cluster", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _port_is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cli_cluster_dir(tmp_path: Path) -> Iterator[Path]:
    if binaries.missing_binaries(list(binaries.CONTROL_PLANE_COMPONENTS)):
        pytest.fail(f"control-plane binaries are missing; {INSTALL_HINT}")
    data_dir = tmp_path / "cluster"
    yield data_dir
    # Stops the processes if the test failed before its own `down`.
    dev_cluster.down("pytest-cli", data_dir)


def test_cli_up_status_down_leaves_nothing_behind(cli_cluster_dir: Path) -> None:
    up = _kubeclip("up", "--name", "pytest-cli", "--data-dir", str(cli_cluster_dir))
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip().splitlines()[-1])
    state = dev_cluster.load_state("pytest-cli", cli_cluster_dir)
    assert kubeconfig == state.kubeconfig
    assert kubeconfig.is_file()

    status = _kubeclip("status", "--name", "pytest-cli", "--data-dir", str(cli_cluster_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "readyz=ok" in status.stdout
    assert "kwok-h100-0" in status.stdout

    down = _kubeclip("down", "--name", "pytest-cli", "--data-dir", str(cli_cluster_dir))
    assert down.returncode == 0, down.stderr

    assert [record.name for record in state.processes if processes.is_running(record)] == []
    assert [port for port in state.ports.to_json().values() if _port_is_listening(port)] == []
    assert not cli_cluster_dir.exists()


def test_up_twice_with_same_name_is_rejected(cli_cluster_dir: Path) -> None:
    dev_cluster.up("pytest-cli", cli_cluster_dir)

    with pytest.raises(dev_cluster.ClusterError, match="already running"):
        dev_cluster.up("pytest-cli", cli_cluster_dir)


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE kubeclip_test_value gauge\nkubeclip_test_value 42\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_prometheus_scrapes_given_target(prometheus_server: Callable[[list[dict[str, Any]]], PrometheusServer]) -> None:
    target = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        server = prometheus_server([{"job_name": "target", "static_configs": [{"targets": [f"127.0.0.1:{target.server_port}"]}]}])

        def query() -> list[dict[str, Any]]:
            url = f"{server.url}/api/v1/query?" + urllib.parse.urlencode({"query": 'kubeclip_test_value{job="target"}'})
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["result"]

        wait_for(lambda: bool(query()), "Prometheus has scraped the target")
        assert query()[0]["value"][1] == "42"
    finally:
        target.shutdown()
        target.server_close()
