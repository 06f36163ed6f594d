"""The pod runner of ``kubeclip.dev.pod_runner``, built from a test ``ControlPlane``.

The runner itself lives in the package, where ``kubeclip dev run-pods`` uses it too.
Tests import it from here so that ``PodRunner(cluster, work_dir=...)`` takes the
``cluster`` fixture as it is.
"""

from __future__ import annotations

from pathlib import Path

from kubeclip.dev import pod_runner
from kubeclip.dev.pod_runner import (  # noqa: F401 - re-exports
    DEFAULT_GRACE_SECONDS,
    SETUP_RETRY_SECONDS,
    STOP_GRACE_SECONDS,
    TRAINER_SELECTOR,
    WATCH_TIMEOUT_SECONDS,
    PodProcess,
    _kubelet_exit_code,
)
from tests.support.controlplane import ControlPlane


class PodRunner(pod_runner.PodRunner):
    """``kubeclip.dev.pod_runner.PodRunner`` for the development cluster of a test fixture."""

    def __init__(self, plane: ControlPlane, *, work_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(plane.kubeconfig, pod_runner.api_server_of(plane.state), work_dir=work_dir, extra_env=extra_env)
