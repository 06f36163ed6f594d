"""Compute a job's status from what the operator observes of its trainer.

``build_status`` is a pure function of the previous status, the resolved job and an
``Observation`` (the trainer Job, its pods and its progress report), so every
transition can be tested without a cluster. It returns the new status and the
condition transitions, from which the operator posts events. The reconciler is the
only caller that writes the result.
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
#: Fields the operator keeps from pass to pass; the others are computed again in each pass.
_CARRIED_FIELDS = (
    "startTime", "completionTime", "nodeName", "gpuType", "progress", "evaluation", "checkpoints", "modelUri",
    "outputUri", "failedAttempts", "workload", "resolvedSettings",
)  # fmt: skip


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
    """A job's new status and the condition transitions that lead to it."""

    status: dict[str, Any]
    transitions: list[Transition]

    @property
    def phase(self) -> str:
        return self.status.get("phase", JobPhase.PENDING.value)


def build_status(previous: dict[str, Any], resolved: ResolvedJob, observation: Observation, now: datetime | None = None) -> StatusUpdate:
    """Compute the status of a resolved job from its observed trainer."""
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
        _from_workload(conditions, status, resolved, observation, stamp)
    status["conditions"] = conditions.to_list()
    status["phase"] = conditions.phase(observation.job is not None).value
    _set_completion_time(status, stamp)
    return StatusUpdate(status, conditions.transitions)


def problem_status(previous: dict[str, Any], problem: Problem, generation: int, now: datetime | None = None) -> StatusUpdate:
    """Compute the status of a job that cannot run: failed for a permanent problem, pending otherwise.

    When the target cluster cannot be reached under a trainer that was scheduled or
    running, only the operator's view of it is lost: Running becomes Unknown and the phase stays.
    """
    stamp = now_iso(now)
    conditions = Conditions(previous.get("conditions"), generation=generation, now=stamp)
    status = _carried_fields(previous)
    status["observedGeneration"] = generation
    view_lost = problem.reason == Reason.CLUSTER_UNREACHABLE and previous.get("phase") in (JobPhase.RUNNING.value, JobPhase.SCHEDULING.value)
    if view_lost:
        conditions.set(Type.RUNNING, Status.UNKNOWN, problem.reason, problem.message)
    elif problem.retry:
        conditions.set(Type.SCHEDULED, Status.FALSE, problem.reason, problem.message)
    else:
        conditions.set(Type.FAILED, Status.TRUE, problem.reason, problem.message)
    status["conditions"] = conditions.to_list()
    status["phase"] = previous["phase"] if view_lost else conditions.phase(bool(previous.get("workload"))).value
    _set_completion_time(status, stamp)
    return StatusUpdate(status, conditions.transitions)


def _carried_fields(previous: dict[str, Any]) -> dict[str, Any]:
    return {key: previous[key] for key in _CARRIED_FIELDS if key in previous}


def _set_completion_time(status: dict[str, Any], stamp: str) -> None:
    if status["phase"] in TERMINAL_PHASES and not status.get("completionTime"):
        status["completionTime"] = stamp


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
    if isinstance(report.get("modelUri"), str) and report["modelUri"]:
        status["modelUri"] = report["modelUri"]


def _no_workload(conditions: Conditions, resolved: ResolvedJob, observation: Observation) -> None:
    if observation.waiting_for_capacity:
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_CAPACITY, observation.waiting_for_capacity)
    else:
        message = f"creating trainer Job {resolved.namespace}/{resolved.workload} in cluster {resolved.cluster_name}"
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, message)


def _workload_reference(resolved: ResolvedJob, observation: Observation) -> dict[str, Any]:
    reference = {"cluster": resolved.cluster_name, "namespace": resolved.namespace, "jobName": resolved.workload}
    pod = pod_info.current_pod(observation.pods) or pod_info.newest_pod(observation.pods)
    if pod is not None:
        reference["podName"] = pod["metadata"]["name"]
    return reference


def _from_workload(conditions: Conditions, status: dict[str, Any], resolved: ResolvedJob, observation: Observation, stamp: str) -> None:
    job, pods, report = observation.job, observation.pods, observation.report or {}
    trainer_error = report.get("error") if isinstance(report.get("error"), dict) else None

    # A finished Job decides the outcome, whatever its pods still show.
    if pod_info.job_condition(job, "Complete") or pod_info.job_condition(job, "SuccessCriteriaMet"):
        _job_succeeded(conditions, status, resolved)
        return
    failed = pod_info.job_condition(job, "Failed") or pod_info.job_condition(job, "FailureTarget")
    if failed:
        _job_failed(conditions, failed, pods, trainer_error)
        return

    # Suspension comes next, because the Job controller deletes the pod of a suspended Job.
    if (job.get("spec") or {}).get("suspend"):
        _job_suspended(conditions, status)
        return
    conditions.clear(Type.SUSPENDED, Reason.RESUMED, "spec.suspend is false; the trainer resumes from the newest checkpoint")

    # Otherwise the current pod shows where the trainer is.
    pod = pod_info.current_pod(pods)
    if pod is None:
        _between_attempts(conditions, status, pods, trainer_error)
    elif _scheduling_state(conditions, status, resolved, pod):
        _pod_state(conditions, status, pod, report, stamp)


def _job_succeeded(conditions: Conditions, status: dict[str, Any], resolved: ResolvedJob) -> None:
    where = status.get("modelUri") or resolved.job.spec.output.storage_uri
    conditions.set(Type.SUCCEEDED, Status.TRUE, Reason.TRAINING_COMPLETED, f"training finished; the final model is at {where}")
    conditions.clear(Type.RUNNING, Reason.TRAINING_COMPLETED, "the trainer finished")


def _job_failed(conditions: Conditions, failed: dict[str, Any], pods: list[dict[str, Any]], trainer_error: dict[str, Any] | None) -> None:
    detail = pod_info.describe_failure(pod_info.last_failed_pod(pods), trainer_error)
    if failed.get("reason") == "PodFailurePolicy":
        reason = Reason.CONFIGURATION_ERROR
        message = f"the trainer stopped on an error that a retry cannot fix: {detail}; fix the job or its data and create it again"
    else:
        reason = Reason.BACKOFF_LIMIT_EXCEEDED
        message = f"the trainer failed more often than spec.backoffLimit allows; last failure: {detail}"
    conditions.set(Type.FAILED, Status.TRUE, reason, message)
    conditions.clear(Type.RUNNING, reason, "the trainer stopped")


def _job_suspended(conditions: Conditions, status: dict[str, Any]) -> None:
    checkpoint_count = len(status.get("checkpoints") or [])
    message = f"spec.suspend is true: the trainer is stopped and {checkpoint_count} checkpoint(s) are kept; set it to false to resume"
    conditions.set(Type.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_USER, message)
    conditions.clear(Type.RUNNING, Reason.SUSPENDED_BY_USER, "the job is suspended")
    conditions.clear(Type.SCHEDULED, Reason.SUSPENDED_BY_USER, "the trainer pod was removed while the job is suspended")


def _between_attempts(conditions: Conditions, status: dict[str, Any], pods: list[dict[str, Any]], trainer_error: dict[str, Any] | None) -> None:
    """Set the conditions while the trainer Job has no live pod: before the first, between two attempts, or just after the last."""
    attempts = status.get("failedAttempts", 0)
    newest = pod_info.newest_pod(pods)
    checkpoint = (status.get("checkpoints") or [{}])[-1].get("name", "the start")
    failed = newest is not None and pod_info.phase(newest) == "Failed"
    if failed and pod_info.is_disrupted(newest):
        detail = pod_info.describe_failure(newest, trainer_error)
        message = f"{detail}; this does not count against spec.backoffLimit, and a new pod resumes from {checkpoint}"
        conditions.set(Type.RUNNING, Status.FALSE, Reason.RETRYING, message)
    elif attempts and (failed or newest is None):
        # A pod that failed before the Job controller counted it is left to the next pass,
        # which reads the new count or the Job's Failed condition.
        detail = pod_info.describe_failure(newest, trainer_error)
        number = max(attempts, _failed_pods(pods))
        message = f"attempt {number} failed: {detail}; the next attempt starts after a backoff and resumes from {checkpoint}"
        conditions.set(Type.RUNNING, Status.FALSE, Reason.RETRYING, message)
    elif newest is None and not conditions.is_true(Type.SCHEDULED):
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, "the trainer Job exists; waiting for its pod")


def _scheduling_state(conditions: Conditions, status: dict[str, Any], resolved: ResolvedJob, pod: dict[str, Any]) -> bool:
    """Set Scheduled from the pod; return whether the pod is on a node."""
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        status["nodeName"] = node
        conditions.set(Type.SCHEDULED, Status.TRUE, Reason.POD_SCHEDULED, f"pod {name} runs on node {node} ({resolved.gpu_type})")
        return True
    blocked = pod_info.unschedulable_message(pod)
    if blocked:
        pool = ", ".join(f"{key}={value}" for key, value in resolved.pool.node_selector.items())
        message = f"no node can take the trainer pod {name}: {blocked} (GPU pool {resolved.gpu_type}: {pool})"
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.UNSCHEDULABLE, message)
    else:
        conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, f"pod {name} waits for the scheduler")
    return False


def _pod_state(conditions: Conditions, status: dict[str, Any], pod: dict[str, Any], report: dict[str, Any], stamp: str) -> None:
    """Set Running from a pod that is on a node and from the trainer's report."""
    name = pod["metadata"]["name"]
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
        where = f" (step {progress['step']} of {progress['totalSteps']} at its latest report)" if progress.get("totalSteps") else ""
        conditions.set(Type.RUNNING, Status.TRUE, Reason.TRAINER_RUNNING, f"the trainer in pod {name} is training{where}")
        return
    # Running stays True for this pod between reports; a new pod starts from False.
    running = conditions.get(Type.RUNNING)
    if not conditions.is_true(Type.RUNNING) or name not in running["message"]:
        conditions.set(Type.RUNNING, Status.FALSE, Reason.TRAINER_STARTING, f"pod {name} runs; the trainer is loading the data and model")


def _failed_pods(pods: list[dict[str, Any]]) -> int:
    """Count the failed pods that count as attempts; the Job's status.failed lags behind them by a moment."""
    return sum(1 for pod in pods if pod_info.phase(pod) == "Failed" and not pod_info.is_disrupted(pod))
