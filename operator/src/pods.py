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
#: Characters kept of the container's termination message and of the trainer's error message.
_CONTAINER_MESSAGE_MAX_LENGTH = 500
_TRAINER_MESSAGE_MAX_LENGTH = 1000


def job_condition(job: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """Return the condition of ``type_`` of a batch/v1 Job when its status is True, else None."""
    if job is None:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def by_creation(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort pods oldest first; pods created in the same second are sorted by name."""
    return sorted(pods, key=lambda pod: (pod["metadata"].get("creationTimestamp", ""), pod["metadata"]["name"]))


def newest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the most recently created pod, or None for no pods."""
    return by_creation(pods)[-1] if pods else None


def current_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the newest pod that is neither finished nor being deleted, or None."""
    live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp") and phase(pod) not in ("Succeeded", "Failed")]
    return newest_pod(live)


def last_failed_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the newest pod in phase Failed, or None."""
    return newest_pod([pod for pod in pods if phase(pod) == "Failed"])


def phase(pod: dict[str, Any]) -> str:
    """Return the pod's phase; a pod without a status yet is Pending."""
    return (pod.get("status") or {}).get("phase", "Pending")


def is_running(pod: dict[str, Any]) -> bool:
    return phase(pod) == "Running"


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    """Return the scheduler's explanation when it could not place the pod, else None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
            return condition.get("message") or "the scheduler found no node for the pod"
    return None


def image_pull_problem(pod: dict[str, Any]) -> str | None:
    """Return the kubelet's reason and message when it cannot pull the trainer image, else None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            return _with_detail(f"{waiting['reason']} for image {status.get('image', '?')}", waiting.get("message"))
    return None


def disruption(pod: dict[str, Any]) -> dict[str, Any] | None:
    """Return the pod's DisruptionTarget condition when the cluster stopped it (preemption, eviction, a lost node), else None.

    The trainer Job's podFailurePolicy ignores such pods, so they do not count against spec.backoffLimit.
    """
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return condition
    return None


def is_disrupted(pod: dict[str, Any]) -> bool:
    """Tell whether the cluster, not the trainer, ended the pod: a DisruptionTarget condition or a kubelet eviction."""
    return disruption(pod) is not None or (pod.get("status") or {}).get("reason") == "Evicted"


def describe_failure(pod: dict[str, Any] | None, trainer_error: dict[str, Any] | None) -> str:
    """Describe in one sentence why a trainer attempt failed: how the pod ended, then the trainer's own message."""
    parts = _pod_end(pod, trainer_error) if pod is not None else []
    if trainer_error and trainer_error.get("message"):
        parts.append(f"trainer: {trainer_error.get('reason', 'error')}: {str(trainer_error['message'])[:_TRAINER_MESSAGE_MAX_LENGTH]}")
    return "; ".join(parts) or "the trainer pod failed without an exit code"


def _pod_end(pod: dict[str, Any], trainer_error: dict[str, Any] | None) -> list[str]:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return [_with_detail(f"pod {name} was evicted", status.get("message"))]
    disrupted = disruption(pod)
    if disrupted is not None:
        return [_with_detail(f"pod {name} was stopped by the cluster ({disrupted.get('reason', 'DisruptionTarget')})", disrupted.get("message"))]
    terminated = _terminated_state(pod)
    if terminated is None:
        return []
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        parts = [f"pod {name} was killed for exceeding its memory limit (OOMKilled)"]
    else:
        parts = [f"pod {name} exited with code {code} ({_EXIT_CODE_MEANINGS.get(code, 'an error')})"]
    # The trainer's own error report is more specific than the last line of its termination message.
    message = (terminated.get("message") or "").strip()
    if message and not trainer_error:
        parts.append(message.splitlines()[-1][:_CONTAINER_MESSAGE_MAX_LENGTH])
    return parts


def _terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def _with_detail(text: str, detail: str | None) -> str:
    detail = (detail or "").strip()
    return f"{text}: {detail}" if detail else text
