"""Read trainer pods and Jobs: which pod is current, why one failed, why one waits.

Plain functions over the JSON of batch/v1 Jobs and core/v1 pods, so the status logic can
be tested on recorded objects.
"""

from __future__ import annotations

from typing import Any

from kubeclip.trainer.errors import ExitCode

_IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_EXIT_CODE_MEANINGS = {
    int(ExitCode.FAILED): "an unexpected error",
    int(ExitCode.INVALID_CONFIG): "invalid settings",
    int(ExitCode.INVALID_DATASET): "an invalid dataset",
    int(ExitCode.STORAGE_FAILED): "a storage error",
    int(ExitCode.INTERRUPTED): "an interruption (it saved a checkpoint)",
    137: "SIGKILL, usually the memory limit",
    143: "SIGTERM",
}


def job_condition(job: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` of a batch/v1 Job when its status is True."""
    if job is None:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def by_creation(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda pod: (pod["metadata"].get("creationTimestamp", ""), pod["metadata"]["name"]))


def current_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod that is neither finished nor being deleted."""
    live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp") and phase(pod) not in ("Succeeded", "Failed")]
    return by_creation(live)[-1] if live else None


def last_failed_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    failed = [pod for pod in pods if phase(pod) == "Failed"]
    return by_creation(failed)[-1] if failed else None


def phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase", "Pending")


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    """The scheduler's explanation when it could not place the pod, else None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
            return condition.get("message") or "the scheduler found no node for the pod"
    return None


def image_pull_problem(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            return f"{waiting['reason']} for image {status.get('image', '?')}: {waiting.get('message', '').strip()}".rstrip(": ")
    return None


def is_running(pod: dict[str, Any]) -> bool:
    return phase(pod) == "Running"


def describe_failure(pod: dict[str, Any] | None, trainer_error: dict[str, Any] | None) -> str:
    """One sentence on why a trainer attempt failed: the trainer's own message first, then the container's end."""
    parts: list[str] = []
    if pod is not None:
        terminated = _terminated_state(pod)
        reason = (pod.get("status") or {}).get("reason")
        if reason == "Evicted":
            parts.append(f"pod {pod['metadata']['name']} was evicted: {(pod.get('status') or {}).get('message', '').strip()}")
        elif terminated is not None:
            code = terminated.get("exitCode")
            meaning = _EXIT_CODE_MEANINGS.get(code, "an error")
            what = "was killed for exceeding its memory limit (OOMKilled)" if terminated.get("reason") == "OOMKilled" else f"exited with code {code} ({meaning})"
            parts.append(f"pod {pod['metadata']['name']} {what}")
            message = (terminated.get("message") or "").strip()
            if message and not trainer_error:
                parts.append(message.splitlines()[-1][:500])
    if trainer_error and trainer_error.get("message"):
        parts.append(f"trainer: {trainer_error.get('reason', 'error')}: {str(trainer_error['message'])[:1000]}")
    return "; ".join(parts) or "the trainer pod failed without an exit code"


def _terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None
