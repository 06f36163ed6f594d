"""Reading trainer pods: which pod is current, and how a failed attempt is described, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from kubeclip.operator.pods import current_pod, describe_failure, image_pull_problem, is_disrupted, last_failed_pod, newest_pod


def pod(name: str, *, phase: str = "Running", created: str = "2026-12-04T10:00:00Z", deleting: bool = False, **status: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-04T10:05:00Z"
    return {"metadata": metadata, "status": {"phase": phase, **status}}


def terminated(exit_code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if message is not None:
        state["message"] = message
    return {"containerStatuses": [{"name": "trainer", "state": {"terminated": state}}]}


def test_current_pod_is_newest_live_one() -> None:
    pods = [pod("w-b", created="2026-12-04T10:00:00Z"), pod("w-a", created="2026-12-04T10:01:00Z", phase="Pending")]
    assert current_pod(pods)["metadata"]["name"] == "w-a"


def test_current_pod_skips_finished_and_deleting() -> None:
    pods = [
        pod("w-1", created="2026-12-04T10:00:00Z"),
        pod("w-2", created="2026-12-04T10:01:00Z", phase="Failed"),
        pod("w-3", created="2026-12-04T10:02:00Z", deleting=True),
        pod("w-4", created="2026-12-04T10:03:00Z", phase="Succeeded"),
    ]
    assert current_pod(pods)["metadata"]["name"] == "w-1"


def test_current_pod_none_when_all_finished() -> None:
    assert current_pod([pod("w-1", phase="Failed"), pod("w-2", phase="Succeeded")]) is None
    assert current_pod([]) is None


def test_same_second_pods_ordered_by_name() -> None:
    pods = [pod("w-zz"), pod("w-aa")]
    assert newest_pod(pods)["metadata"]["name"] == "w-zz"


def test_pod_without_status_is_pending_and_current() -> None:
    bare = {"metadata": {"name": "w-1", "creationTimestamp": "2026-12-04T10:00:00Z"}}
    assert current_pod([bare]) is bare


def test_last_failed_pod_is_newest_failure() -> None:
    pods = [pod("w-1", phase="Failed", created="2026-12-04T10:00:00Z"), pod("w-2", phase="Failed", created="2026-12-04T10:02:00Z"), pod("w-3")]
    assert last_failed_pod(pods)["metadata"]["name"] == "w-2"
    assert last_failed_pod([pod("w-3")]) is None


@pytest.mark.parametrize(
    ("exit_code", "meaning"),
    [(1, "an unexpected error"), (2, "invalid settings"), (3, "an invalid dataset"), (4, "a storage error"), (143, "SIGTERM"), (42, "an error")],
)
def test_exit_code_is_explained(exit_code: int, meaning: str) -> None:
    text = describe_failure(pod("w-1", phase="Failed", **terminated(exit_code)), None)
    assert text == f"pod w-1 exited with code {exit_code} ({meaning})"


def test_oom_killed_names_memory_limit() -> None:
    text = describe_failure(pod("w-1", phase="Failed", **terminated(137, reason="OOMKilled")), None)
    assert text == "pod w-1 was killed for exceeding its memory limit (OOMKilled)"


def test_eviction_quotes_kubelet_message() -> None:
    evicted = pod("w-1", phase="Failed", reason="Evicted", message=" The node was low on resource: memory. ")
    assert describe_failure(evicted, None) == "pod w-1 was evicted: The node was low on resource: memory."
    assert is_disrupted(evicted)


def test_eviction_without_message() -> None:
    assert describe_failure(pod("w-1", phase="Failed", reason="Evicted"), None) == "pod w-1 was evicted"


def test_disruption_target_names_cause() -> None:
    preempted = pod("w-1", phase="Failed", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                                       "message": "Preempted in order to admit critical pod"}], **terminated(137))  # fmt: skip
    assert describe_failure(preempted, None) == "pod w-1 was stopped by the cluster (PreemptionByScheduler): Preempted in order to admit critical pod"
    assert is_disrupted(preempted)


def test_plain_failure_is_not_disruption() -> None:
    failed = pod("w-1", phase="Failed", conditions=[{"type": "DisruptionTarget", "status": "False"}], **terminated(1))
    assert not is_disrupted(failed)


def test_container_message_last_line_without_trainer_error() -> None:
    failed = pod("w-1", phase="Failed", **terminated(1, message="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error\n"))
    assert describe_failure(failed, None) == "pod w-1 exited with code 1 (an unexpected error); RuntimeError: CUDA error"


def test_trainer_error_replaces_container_message() -> None:
    failed = pod("w-1", phase="Failed", **terminated(3, message="last line of the log"))
    error = {"reason": "DatasetError", "exitCode": 3, "message": "captions.jsonl line 4: image 'a.jpg' is not in the archive"}
    text = describe_failure(failed, error)
    assert text == "pod w-1 exited with code 3 (an invalid dataset); trainer: DatasetError: captions.jsonl line 4: image 'a.jpg' is not in the archive"
    assert "last line of the log" not in text


def test_trainer_error_without_pod() -> None:
    assert describe_failure(None, {"message": "disk full"}) == "trainer: error: disk full"


def test_failure_without_any_detail() -> None:
    assert describe_failure(None, None) == "the trainer pod failed without an exit code"
    assert describe_failure(pod("w-1", phase="Failed"), {"reason": "X"}) == "the trainer pod failed without an exit code"


def test_long_trainer_message_is_cut() -> None:
    text = describe_failure(None, {"reason": "E", "message": "x" * 5000})
    assert len(text) == len("trainer: E: ") + 1000


def test_image_pull_problem_without_message() -> None:
    waiting = pod("w-1", phase="Pending", containerStatuses=[{"image": "kubeclip:typo", "state": {"waiting": {"reason": "ErrImagePull", "message": None}}}])
    assert image_pull_problem(waiting) == "ErrImagePull for image kubeclip:typo"


def test_container_creating_is_no_pull_problem() -> None:
    waiting = pod("w-1", phase="Pending", containerStatuses=[{"image": "i", "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert image_pull_problem(waiting) is None
