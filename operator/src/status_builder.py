"""Compute a job's status from what the operator observes of its trainer.

``build_status`` is a pure function of the previous status, the resolved job and an
``Observation`` (the trainer Job, its pods and its progress report), so every
transition can be tested without a cluster. It returns the new status and the
condition transitions, from which the operator posts events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubeclip.api.status import ConditionReason as Reason, ConditionStatus as Status, ConditionType as Type, JobPhase
from kubeclip.operator import pods as pod_info
from kubeclip.operator.conditions import Conditions, Transition, now_iso
from kubeclip.operator.problems import Problem
from kubeclip.operator.progress import checkpoints_status, evaluation_status, progress_status
from kubeclip.operator.resolution import ResolvedJob

TERMINAL_PHASES = frozenset({JobPhase.SUCCEEDED.value, JobPhase.FAILED.value})


@dataclass(frozen=True)
class Observation:
    """The trainer's objects in the target cluster, read from the operator's caches."""

    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    #: Set when the pool is full and no workload was created for the job.
    waiting_for_capacity: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    status: dict[str, Any]
    transitions: list[Transition]

    @property
    def phase(self) -> str:
        return self.status.get("phase", JobPhase.PENDING.value)


def build_status(previous: dict[str, Any], resolved: ResolvedJob, observation: Observation, now: datetime | None = None) -> StatusUpdate:
    """The status for a resolved job and its observed trainer."""
    stamp = now_iso(now)
    conditions = Conditions(previous.get("conditions"), generation=resolved.generation, now=stamp)
    status = _carried_fields(previous)
    status.update(
        observedGeneration=resolved.generation,
        resolvedSettings=resolved.settings.to_status(),
        outputUri=resolved.job.spec.output.storage_uri,
        gpuType=resolved.gpu_type,
    )
    _copy_report(status, observation.report)
    if observation.job is None:
        _no_workload(conditions, resolved, observation)
    else:
        status["workload"] = _workload_reference(resolved, observation)
        status["failedAttempts"] = int((observation.job.get("status") or {}).get("failed") or 0)
        _from_workload(conditions, status, resolved, observation, stamp, previous)
    status["conditions"] = conditions.to_list()
    status["phase"] = conditions.phase(observation.job is not None).value
    if status["phase"] in TERMINAL_PHASES and not status.get("completionTime"):
        status["completionTime"] = stamp
    return StatusUpdate(status, conditions.transitions)


def problem_status(previous: dict[str, Any], problem: Problem, generation: int, now: datetime | None = None) -> StatusUpdate:
    """The status of a job that cannot run: failed for a permanent problem, pending otherwise."""
    stamp = now_iso(now)
    conditions = Conditions(previous.get("conditions"), generation=generation, now=stamp)
    status = _carried_fields(previous)
    status["observedGeneration"] = generation
    running = previous.get("phase") in (JobPhase.RUNNING.value, JobPhase.SCHEDULING.value)
    if problem.reason == Reason.CLUSTER_UNREACHABLE and running:
        # The trainer may still be running there; only the view of it is lost.
        conditions.set(Type.RUNNING, Status.UNKNOWN, problem.reason, problem.message)
    elif problem.retry:
        conditions.set(Type.SCHEDULED, Status.FALSE, problem.reason, problem.message)
    else:
        conditions.set(Type.FAILED, Status.TRUE, problem.reason, problem.message)
    status["conditions"] = conditions.to_list()
    status["phase"] = previous["phase"] if problem.reason == Reason.CLUSTER_UNREACHABLE and running else conditions.phase(bool(previous.get("workload"))).value
    if status["phase"] in TERMINAL_PHASES and not status.get("completionTime"):
        status["completionTime"] = stamp
    return StatusUpdate(status, conditions.transitions)


def _carried_fields(previous: dict[str, Any]) -> dict[str, Any]:
    # Fields the operator keeps from pass to pass; the rest is recomputed.
    keep = ("startTime", "completionTime", "nodeName", "gpuType", "progress", "evaluation", "checkpoints", "modelUri",
            "outputUri", "failedAttempts", "workload", "resolvedSettings")  # fmt: skip
    return {key: previous[key] for key in keep if key in previous}


def _copy_report(status: dict[str, Any], report: dict[str, Any] | None) -> None:
    if not report:
        return
    progress = progress_status(report)
    if progress:
        status["progress"] = progress
    evaluation = evaluation_status(report)
    if evaluation:
        status["evaluation"] = evaluation
    if "checkpoints" in report:
        status["checkpoints"] = checkpoints_status(report)
    if report.get("modelUri"):
        status["modelUri"] = str(report["modelUri"])


def _no_workload(conditions: Conditions, resolved: ResolvedJob, observation: Observation) -> None:
    if observation.waiting_for_capacity:
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_CAPACITY, observation.waiting_for_capacity)
    else:
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, f"creating trainer Job {resolved.namespace}/{resolved.workload} in cluster {resolved.cluster_name}")


def _workload_reference(resolved: ResolvedJob, observation: Observation) -> dict[str, Any]:
    reference = {"cluster": resolved.cluster_name, "namespace": resolved.namespace, "jobName": resolved.workload}
    pod = pod_info.current_pod(observation.pods) or (pod_info.by_creation(observation.pods)[-1] if observation.pods else None)
    if pod is not None:
        reference["podName"] = pod["metadata"]["name"]
    return reference


def _from_workload(conditions: Conditions, status: dict[str, Any], resolved: ResolvedJob, observation: Observation, stamp: str, previous: dict[str, Any]) -> None:
    job, pods, report = observation.job, observation.pods, observation.report or {}
    trainer_error = report.get("error") if isinstance(report.get("error"), dict) else None
    if pod_info.job_condition(job, "Complete") or pod_info.job_condition(job, "SuccessCriteriaMet"):
        where = status.get("modelUri") or resolved.job.spec.output.storage_uri
        conditions.set(Type.SUCCEEDED, Status.TRUE, Reason.TRAINING_COMPLETED, f"training finished; the final model is at {where}")
        conditions.clear(Type.RUNNING, Reason.TRAINING_COMPLETED, "the trainer finished")
        return
    failed = pod_info.job_condition(job, "Failed") or pod_info.job_condition(job, "FailureTarget")
    if failed:
        _job_failed(conditions, failed, pods, trainer_error)
        return
    if (job.get("spec") or {}).get("suspend"):
        kept = len(status.get("checkpoints") or [])
        conditions.set(Type.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_USER, f"spec.suspend is true: the trainer is stopped and {kept} checkpoint(s) are kept; set it to false to resume")
        conditions.clear(Type.RUNNING, Reason.SUSPENDED_BY_USER, "the job is suspended")
        conditions.clear(Type.SCHEDULED, Reason.SUSPENDED_BY_USER, "the trainer pod was removed while the job is suspended")
        return
    conditions.clear(Type.SUSPENDED, Reason.RESUMED, "spec.suspend is false; the trainer resumes from the newest checkpoint")
    pod = pod_info.current_pod(pods)
    if pod is None:
        _between_attempts(conditions, status, pods, trainer_error, previous)
        return
    _pod_state(conditions, status, resolved, pod, report, stamp)


def _job_failed(conditions: Conditions, failed: dict[str, Any], pods: list[dict[str, Any]], trainer_error: dict[str, Any] | None) -> None:
    detail = pod_info.describe_failure(pod_info.last_failed_pod(pods), trainer_error)
    if failed.get("reason") == "PodFailurePolicy":
        reason, message = Reason.CONFIGURATION_ERROR, f"the trainer stopped on an error that a retry cannot fix: {detail}; fix the job or its data and create it again"
    else:
        reason, message = Reason.BACKOFF_LIMIT_EXCEEDED, f"the trainer failed more often than spec.backoffLimit allows; last failure: {detail}"
    conditions.set(Type.FAILED, Status.TRUE, reason, message)
    conditions.clear(Type.RUNNING, reason, "the trainer stopped")


def _between_attempts(conditions: Conditions, status: dict[str, Any], pods: list[dict[str, Any]], trainer_error: dict[str, Any] | None, previous: dict[str, Any]) -> None:
    attempts = status.get("failedAttempts", 0)
    if attempts:
        detail = pod_info.describe_failure(pod_info.last_failed_pod(pods), trainer_error)
        newest = (status.get("checkpoints") or [{}])[-1].get("name", "the start")
        conditions.set(Type.RUNNING, Status.FALSE, Reason.RETRYING, f"attempt {attempts} failed: {detail}; the next attempt starts after a backoff and resumes from {newest}")
    elif not conditions.is_true(Type.SCHEDULED):
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, "the trainer Job exists; waiting for its pod")


def _pod_state(conditions: Conditions, status: dict[str, Any], resolved: ResolvedJob, pod: dict[str, Any], report: dict[str, Any], stamp: str) -> None:
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        status["nodeName"] = node
        conditions.set(Type.SCHEDULED, Status.TRUE, Reason.POD_SCHEDULED, f"pod {name} runs on node {node} ({resolved.gpu_type})")
    else:
        blocked = pod_info.unschedulable_message(pod)
        if blocked:
            pool = ", ".join(f"{key}={value}" for key, value in resolved.pool.node_selector.items())
            conditions.set(Type.SCHEDULED, Status.FALSE, Reason.UNSCHEDULABLE, f"no node can take the trainer pod {name}: {blocked} (GPU pool {resolved.gpu_type}: {pool})")
        else:
            conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, f"pod {name} waits for the scheduler")
        return
    pull = pod_info.image_pull_problem(pod)
    if pull:
        conditions.set(Type.RUNNING, Status.FALSE, Reason.IMAGE_PULL_FAILED, f"{pull}; check the operator's --trainer-image and the registry credentials")
        return
    if not pod_info.is_running(pod):
        conditions.set(Type.RUNNING, Status.FALSE, Reason.TRAINER_STARTING, f"pod {name} is starting")
        return
    status.setdefault("startTime", stamp)
    if report.get("pod") == name and report.get("state") == "Running":
        progress = status.get("progress") or {}
        where = f"step {progress.get('step', 0)} of {progress.get('totalSteps', '?')}"
        conditions.set(Type.RUNNING, Status.TRUE, Reason.TRAINER_RUNNING, f"the trainer in pod {name} is training ({where} at its latest report)")
    elif not conditions.is_true(Type.RUNNING) or (conditions.get(Type.RUNNING) or {}).get("message", "").find(name) < 0:
        conditions.set(Type.RUNNING, Status.FALSE, Reason.TRAINER_STARTING, f"pod {name} runs; the trainer is loading the data and model")
