"""The operator's Prometheus metrics: jobs by phase and GPU type, reconcile errors and durations, scheduling delay."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubeclip.api.job import GpuType
from kubeclip.api.status import JobPhase

logger = logging.getLogger(__name__)

METRIC_NAMES = (
    "kubeclip_operator_jobs",
    "kubeclip_operator_reconcile_errors_total",
    "kubeclip_operator_reconcile_duration_seconds",
    "kubeclip_operator_scheduling_delay_seconds",
    "kubeclip_operator_cluster_reachable",
)
#: Buckets of the scheduling delay in seconds: from a pod placed at once to a job queued for two hours.
_DELAY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class OperatorMetrics:
    """Holds the metrics in their own registry, so tests can run several operators in one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs = Gauge("kubeclip_operator_jobs", "ClipTrainingJobs handled by this operator, by phase and GPU type.", ["phase", "gpu_type"], registry=self.registry)
        self.errors = Counter(
            "kubeclip_operator_reconcile_errors", "Reconciliations that failed with an error and will be retried, by reason.", ["reason"], registry=self.registry
        )
        self.duration = Histogram("kubeclip_operator_reconcile_duration_seconds", "Seconds one reconciliation pass of one job takes.", registry=self.registry)
        self.scheduling_delay = Histogram(
            "kubeclip_operator_scheduling_delay_seconds",
            "Seconds from a job's creation to the first scheduling of its trainer pod.",
            ["gpu_type"],
            buckets=_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.reachable = Gauge("kubeclip_operator_cluster_reachable", "1 when the operator reached the cluster's API server at its last try.", ["cluster"], registry=self.registry)
        self._phases: dict[str, tuple[str, str]] = {}
        self._scheduled: set[str] = set()
        self._lock = threading.Lock()
        # Every series exists from the start, so a dashboard shows 0 instead of no data.
        for phase in JobPhase:
            for gpu in GpuType:
                self.jobs.labels(phase.value, gpu.value).set(0)

    def record_phase(self, uid: str, phase: str, gpu_type: str) -> None:
        """Count the job under its current phase and GPU type, moving it out of the ones it had before."""
        with self._lock:
            old = self._phases.get(uid)
            if old == (phase, gpu_type):
                return
            if old is not None:
                self.jobs.labels(*old).dec()
            self.jobs.labels(phase, gpu_type).inc()
            self._phases[uid] = (phase, gpu_type)

    def forget(self, uid: str) -> None:
        """Stop counting a deleted job."""
        with self._lock:
            old = self._phases.pop(uid, None)
            if old is not None:
                self.jobs.labels(*old).dec()
            self._scheduled.discard(uid)

    def record_scheduled(self, uid: str, gpu_type: str, created: str, scheduled: str) -> None:
        """Observe the delay once per job, at the first time its pod was scheduled.

        Args:
            created: The job's creationTimestamp, RFC 3339 in UTC with seconds.
            scheduled: lastTransitionTime of the job's Scheduled condition, in the same form.
        """
        with self._lock:
            if uid in self._scheduled:
                return
            self._scheduled.add(uid)
        try:
            delay = (_parse(scheduled) - _parse(created)).total_seconds()
        except ValueError as error:
            logger.warning("scheduling delay not recorded: %s", error, extra={"job_uid": uid})
            return
        self.scheduling_delay.labels(gpu_type).observe(max(0.0, delay))


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
