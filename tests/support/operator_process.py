"""Run ``kubeclip operator`` as a real subprocess against a test control plane.

Tests start it with the kubeconfig of the operator's ServiceAccount, which holds exactly
the RBAC of the Helm chart (``tests/support/operator_access.py``), so a missing
permission fails the tests as it would fail an installation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubeclip.dev import health
from tests.support.controlplane import free_port, wait_for

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


@dataclass
class OperatorProcess:
    """One operator process; ``start`` and ``stop`` may be called again for a restart."""

    kubeconfig: Path
    log_path: Path
    extra_arguments: tuple[str, ...] = ()
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        command = [
            sys.executable, "-m", "kubeclip.cli.main", "operator", f"--kubeconfig={self.kubeconfig}",
            f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}", "--bind-address=127.0.0.1",
            "--trainer-image=kubeclip:test", "--resync-seconds=5", "--log-format=json", *self.extra_arguments,
        ]  # fmt: skip
        log = self.log_path.open("a")
        log.write(f"--- starting operator: {' '.join(command)}\n")
        log.flush()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode} during startup:\n{self.log()}")
            return health.probe(f"http://127.0.0.1:{self.health_port}/healthz").healthy

        wait_for(healthy, "the operator answers /healthz", timeout=STARTUP_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """End the process at once, as a crash or an evicted operator pod would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
