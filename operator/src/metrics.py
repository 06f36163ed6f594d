"""The operator's Prometheus metrics: jobs by phase and GPU type, reconcile errors and durations, scheduling delay."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubeclip.api.status import JobPhase

METRIC_NAMES = (
    "kubeclip_operator_jobs",
    "kubeclip_operator_reconcile_errors_total",
    "kubeclip_operator_reconcile_duration_seconds",
    "kubeclip_operator_scheduling_delay_seconds",
    "kubeclip_operator_cluster_reachable",
)
_DELAY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class OperatorMetrics:
    """Holds the metrics in their own registry, so tests can run several operators in one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs = Gauge("kubeclip_operator_jobs", "ClipTrainingJobs handled by this operator, by phase and GPU type.", ["phase", "gpu_type"], registry=self.registry)
        self.errors = Counter(
            "kubeclip_operator_reconcile_errors", "Reconciliations that failed with an error and will be retried, by reason.", ["reason"], registry=self.registry
        )
        self.duration = Histogram("kubeclip_operator_reconcile_duration_seconds", "Time of one reconciliation of one job.", registry=self.registry)
        self.scheduling_delay = Histogram(
            "kubeclip_operator_scheduling_delay_seconds",
            "Time from a job's creation to the first scheduling of its trainer pod.",
            ["gpu_type"],
            buckets=_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.reachable = Gauge("kubeclip_operator_cluster_reachable", "1 when the operator reached the cluster's API server at its last try.", ["cluster"], registry=self.registry)
        self._phases: dict[str, tuple[str, str]] = {}
        self._scheduled: set[str] = set()
        self._lock = threading.Lock()
        for phase in JobPhase:
            for gpu in ("H100", "A100", "L40"):
                self.jobs.labels(phase.value, gpu).set(0)

    def record_phase(self, uid: str, phase: str, gpu_type: str) -> None:
        with self._lock:
            old = self._phases.get(uid)
            if old == (phase, gpu_type):
                return
            if old is not None:
                self.jobs.labels(*old).dec()
            self.jobs.labels(phase, gpu_type).inc()
            self._phases[uid] = (phase, gpu_type)

    def forget(self, uid: str) -> None:
        with self._lock:
            old = self._phases.pop(uid, None)
            if old is not None:
                self.jobs.labels(*old).dec()
            self._scheduled.discard(uid)

    def record_scheduled(self, uid: str, gpu_type: str, created: str, scheduled: str) -> None:
        """Observe the delay once per job, at the first time its pod was scheduled."""
        with self._lock:
            if uid in self._scheduled:
                return
            self._scheduled.add(uid)
        delay = (_parse(scheduled) - _parse(created)).total_seconds()
        self.scheduling_delay.labels(gpu_type).observe(max(0.0, delay))


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
