"""``kubeclip dev run-pods`` as a user runs it: a subprocess against a running cluster, stopped by SIGTERM.

The pods carry the trainer's label and run ``python -c`` scripts, so no training is
needed. tests/devcluster/test_pod_runner.py covers the pod runner's behaviour in detail.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeclip.dev import kwok_config
from tests.support.controlplane import ControlPlane, create_namespace, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
#: Seconds for a pod to be scheduled and its script to start and end on a loaded 2-core machine.
PROCESS_TIMEOUT_SECONDS = 60.0
#: Seconds ``run-pods`` may take to stop once its trainers have exited.
STOP_TIMEOUT_SECONDS = 30.0

# Prints the metrics port variable the runner set, then exits 0.
PRINT_PORT_SCRIPT = 'import os; print("METRICS_PORT=" + os.environ.get("KUBECLIP_METRICS_PORT", "unset"), flush=True)'
# Exits 75 on SIGTERM, as the trainer does after its checkpoint.
WAIT_FOR_TERM_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    def on_term(signum, frame):
        print("got SIGTERM; checkpoint saved", flush=True)
        sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    print("sleeping", flush=True)
    time.sleep(300)
    """
)


def script_pod(name: str, script: str) -> dict[str, Any]:
    container = {"name": "trainer", "image": "kubeclip-trainer:test", "command": ["python", "-c", script], "resources": {"limits": {kwok_config.GPU_RESOURCE: "1"}}}
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubeclip-trainer"}},
        "spec": {
            "containers": [container],
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "nodeSelector": {"nvidia.com/gpu.product": H100},
            "tolerations": [{"key": kwok_config.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"run-pods-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def run_pods(cluster: ControlPlane, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """``kubeclip dev run-pods`` for the session's cluster; yields the process, its log and its work folder."""
    work_dir, log_path = tmp_path / "pods", tmp_path / "run-pods.log"
    command = [
        sys.executable, "-m", "kubeclip.cli.main", "dev", "run-pods",
        "--name", cluster.state.name, "--data-dir", str(cluster.state.data_dir), "--work-dir", str(work_dir),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, log_path, work_dir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(STOP_TIMEOUT_SECONDS)
        # pytest shows what teardown prints only when the test failed.
        print(f"--- run-pods log\n{read_text(log_path)}")


@pytest.mark.controlplane
def test_run_pods_runs_pod_and_stops_on_sigterm(cluster: ControlPlane, namespace: str, run_pods):
    process, log_path, work_dir = run_pods

    # A pod that exits 0: the runner starts it, gives it a free metrics port and reports its end.
    cluster.core.create_namespaced_pod(namespace, script_pod("prints-port", PRINT_PORT_SCRIPT))
    ended_line = f"pod {namespace}/prints-port: process exited with code 0"
    wait_for(lambda: ended_line in read_text(log_path), "run-pods reports the first pod's exit", timeout=PROCESS_TIMEOUT_SECONDS)
    wait_for(lambda: cluster.core.read_namespaced_pod("prints-port", namespace).status.phase == "Succeeded", "the first pod is Succeeded")
    pod_log = work_dir / "logs" / f"{namespace}_prints-port.log"
    assert "METRICS_PORT=0" in read_text(pod_log)
    assert f"pod {namespace}/prints-port: started process" in read_text(log_path)
    assert str(pod_log) in read_text(log_path)

    # A pod still running when run-pods gets SIGTERM: it gets SIGTERM too, and run-pods exits 0 after it.
    cluster.core.create_namespaced_pod(namespace, script_pod("waits", WAIT_FOR_TERM_SCRIPT))
    waiting_log = work_dir / "logs" / f"{namespace}_waits.log"
    wait_for(lambda: "sleeping" in read_text(waiting_log), "the second pod's script installed its SIGTERM handler", timeout=PROCESS_TIMEOUT_SECONDS)

    process.send_signal(signal.SIGTERM)

    assert process.wait(STOP_TIMEOUT_SECONDS) == 0, read_text(log_path)
    assert "got SIGTERM; checkpoint saved" in read_text(waiting_log)
    assert "process exited with code 75" in read_text(waiting_log)
    assert "SIGTERM received; stopping the trainers" in read_text(log_path)
    # A stopping runner sets no outcome: the pod stays Running, so a new run-pods runs it again.
    assert cluster.core.read_namespaced_pod("waits", namespace).status.phase == "Running"
