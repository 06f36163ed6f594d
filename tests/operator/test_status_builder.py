"""Status computed from observed trainer objects: every phase and condition transition, without a cluster."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kubeclip.api.cluster import ClipClusterSpec
from kubeclip.api.loading import load_job_file
from kubeclip.api.recommendations import resolve_settings
from kubeclip.api.status import ClipTrainingJobStatus, ConditionReason, JobPhase
from kubeclip.operator.problems import Problem
from kubeclip.operator.progress import PROGRESS_KEY, read_report
from kubeclip.operator.resolution import ResolvedJob
from kubeclip.operator.status_builder import Observation, build_status, problem_status

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=timezone.utc)
UID = "0b7d2c7e-0000-4000-8000-000000000001"


@pytest.fixture()
def resolved() -> ResolvedJob:
    job = load_job_file(REPO / "examples" / "local-job.yaml")
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"output": job.spec.output.model_copy(update={"storage_uri": "s3://bucket/run", "region": "eu-west-1"})})})
    cluster = ClipClusterSpec.model_validate(
        {"type": "Managed", "gpuPools": [{"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"}}]}
    )
    return ResolvedJob(
        job=job, uid=UID, generation=1, created="2026-12-04T09:59:00Z", settings=resolve_settings(job),
        cluster_name="managed", cluster=cluster, pool=cluster.gpu_pools[0], namespace="default", workload="skimage-photos-small-1234abcd",
    )  # fmt: skip


def trainer_job(*, failed: int = 0, suspend: bool = False, condition: tuple[str, str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"failed": failed} if failed else {}
    if condition:
        status["conditions"] = [{"type": condition[0], "status": "True", "reason": condition[1]}]
    return {"metadata": {"name": "w", "namespace": "default"}, "spec": {"suspend": suspend}, "status": status}


def pod(name: str, *, phase: str = "Pending", node: str | None = None, created: str = "2026-12-04T10:00:00Z", **status: Any) -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec, "status": {"phase": phase, **status}}


def report(**fields: Any) -> dict[str, Any]:
    return read_report({"metadata": {"name": "p"}, "data": {PROGRESS_KEY: json.dumps(fields)}})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(item for item in status["conditions"] if item["type"] == type_)


def valid(status: dict[str, Any]) -> dict[str, Any]:
    """The status must fit the generated schema's model, or the API server would prune the unknown fields."""
    ClipTrainingJobStatus.model_validate(status)
    return status


def test_unschedulable_pod_shows_scheduler_reason(resolved: ResolvedJob) -> None:
    blocked = pod("w-1", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector."}])  # fmt: skip
    update = build_status({}, resolved, Observation(trainer_job(), [blocked]), T0)
    scheduled = condition(valid(update.status), "Scheduled")
    assert update.phase == JobPhase.SCHEDULING.value
    assert scheduled["reason"] == ConditionReason.UNSCHEDULABLE.value
    assert "didn't match Pod's node affinity/selector" in scheduled["message"]
    assert "NVIDIA-L40" in scheduled["message"]
    assert [transition.reason for transition in update.transitions] == ["Unschedulable"]


def test_running_trainer_fills_progress_and_evaluation(resolved: ResolvedJob) -> None:
    progress = report(state="Running", pod="w-1", epoch=2, step=30, totalSteps=120, loss=1.23456789, samplesPerSecond=41.25, etaSeconds=90,
                      evaluation={"step": 25, "loss": 2.5, "imageToTextRecallAt1": 0.125, "textToImageRecallAt5": 0.5},
                      checkpoints=[{"name": "checkpoint-25", "step": 25, "uri": "s3://bucket/run/checkpoint-25"}])  # fmt: skip
    update = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="kwok-l40-0")], progress), T0)
    status = valid(update.status)
    assert update.phase == JobPhase.RUNNING.value
    assert status["progress"] == {"epoch": 2, "step": 30, "totalSteps": 120, "progressPercentage": 25, "loss": "1.2346",
                                  "samplesPerSecond": "41.2", "estimatedRemainingSeconds": 90}  # fmt: skip
    assert status["evaluation"] == {"step": 25, "loss": "2.5", "imageToTextRecallAt1": "0.125", "textToImageRecallAt5": "0.5"}
    assert status["checkpoints"][0]["name"] == "checkpoint-25"
    assert status["nodeName"] == "kwok-l40-0"
    assert status["startTime"] == "2026-12-04T10:00:00Z"
    assert status["workload"] == {"cluster": "managed", "namespace": "default", "jobName": resolved.workload, "podName": "w-1"}
    assert status["resolvedSettings"]["learningRate"] == "5e-4"


def test_pod_running_before_first_report_is_starting(resolved: ResolvedJob) -> None:
    update = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="kwok-l40-0")], None), T0)
    assert condition(update.status, "Running")["reason"] == ConditionReason.TRAINER_STARTING.value
    assert update.phase == JobPhase.SCHEDULING.value


def test_transition_time_kept_while_status_unchanged(resolved: ResolvedJob) -> None:
    observation = Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=1, totalSteps=10))
    first = build_status({}, resolved, observation, T0)
    later = Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=5, totalSteps=10))
    second = build_status(first.status, resolved, later, T0 + timedelta(minutes=5))
    assert condition(second.status, "Running")["lastTransitionTime"] == condition(first.status, "Running")["lastTransitionTime"]
    assert second.transitions == []
    assert second.status["progress"]["step"] == 5


def test_permanent_trainer_error_fails_with_its_message(resolved: ResolvedJob) -> None:
    failed_pod = pod("w-1", phase="Failed", node="n", containerStatuses=[{"state": {"terminated": {"exitCode": 3, "reason": "Error"}}}])
    progress = report(state="Failed", pod="w-1", error={"reason": "DatasetError", "exitCode": 3, "message": "captions.jsonl line 4: image 'a.jpg' is not in the archive"})
    update = build_status({}, resolved, Observation(trainer_job(failed=1, condition=("Failed", "PodFailurePolicy")), [failed_pod], progress), T0)
    failed = condition(valid(update.status), "Failed")
    assert update.phase == JobPhase.FAILED.value
    assert failed["reason"] == ConditionReason.CONFIGURATION_ERROR.value
    assert "exited with code 3 (an invalid dataset)" in failed["message"]
    assert "captions.jsonl line 4" in failed["message"]
    assert update.status["completionTime"] == "2026-12-04T10:00:00Z"


def test_backoff_limit_reports_oom(resolved: ResolvedJob) -> None:
    oom = pod("w-3", phase="Failed", node="n", containerStatuses=[{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}])
    update = build_status({}, resolved, Observation(trainer_job(failed=4, condition=("Failed", "BackoffLimitExceeded")), [oom]), T0)
    failed = condition(update.status, "Failed")
    assert failed["reason"] == ConditionReason.BACKOFF_LIMIT_EXCEEDED.value
    assert "OOMKilled" in failed["message"]
    assert update.status["failedAttempts"] == 4


def test_failed_attempt_waits_for_retry(resolved: ResolvedJob) -> None:
    failed_pod = pod("w-1", phase="Failed", node="n", containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}])
    progress = report(state="Failed", pod="w-1", checkpoints=[{"name": "checkpoint-50", "step": 50}])
    update = build_status({}, resolved, Observation(trainer_job(failed=1), [failed_pod], progress), T0)
    running = condition(update.status, "Running")
    assert running["reason"] == ConditionReason.RETRYING.value
    assert "resumes from checkpoint-50" in running["message"]
    assert update.phase == JobPhase.SCHEDULING.value


def test_suspend_then_resume(resolved: ResolvedJob) -> None:
    running = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=3)), T0)
    suspended = build_status(running.status, resolved, Observation(trainer_job(suspend=True), []), T0 + timedelta(minutes=1))
    assert suspended.phase == JobPhase.SUSPENDED.value
    assert condition(suspended.status, "Running")["status"] == "False"
    resumed = build_status(suspended.status, resolved, Observation(trainer_job(), [pod("w-2", phase="Running", node="n")]), T0 + timedelta(minutes=2))
    assert condition(resumed.status, "Suspended") == {**condition(resumed.status, "Suspended"), "status": "False", "reason": "Resumed"}
    assert resumed.phase != JobPhase.SUSPENDED.value
    assert condition(resumed.status, "Running")["reason"] == ConditionReason.TRAINER_STARTING.value


def test_completed_job_names_model(resolved: ResolvedJob) -> None:
    progress = report(state="Succeeded", pod="w-1", step=120, totalSteps=120, modelUri="s3://bucket/run/model")
    update = build_status({}, resolved, Observation(trainer_job(condition=("Complete", "CompletionsReached")), [pod("w-1", phase="Succeeded", node="n")], progress), T0)
    assert update.phase == JobPhase.SUCCEEDED.value
    assert valid(update.status)["modelUri"] == "s3://bucket/run/model"
    assert "s3://bucket/run/model" in condition(update.status, "Succeeded")["message"]
    assert update.status["progress"]["progressPercentage"] == 100


@pytest.mark.parametrize(
    ("problem", "phase", "condition_type"),
    [
        (Problem(ConditionReason.DATASET_NOT_FOUND, "ClipDataset x does not exist", retry=True), JobPhase.PENDING, "Scheduled"),
        (Problem(ConditionReason.INVALID_SPEC, "spec.output.storageUri is required", retry=False), JobPhase.FAILED, "Failed"),
    ],
)
def test_problem_status(problem: Problem, phase: JobPhase, condition_type: str) -> None:
    update = problem_status({}, problem, generation=2, now=T0)
    assert update.phase == phase.value
    found = condition(valid(update.status), condition_type)
    assert found["reason"] == problem.reason.value
    assert found["message"] == problem.message
    assert found["observedGeneration"] == 2


def test_unreachable_cluster_keeps_running_phase_unknown() -> None:
    previous = {"phase": "Running", "conditions": [{"type": "Running", "status": "True", "reason": "TrainerRunning", "message": "m",
                                                    "lastTransitionTime": "2026-12-04T09:00:00Z", "observedGeneration": 1}],
                "workload": {"cluster": "byo", "namespace": "kubeclip-jobs", "jobName": "w"}}  # fmt: skip
    update = problem_status(previous, Problem(ConditionReason.CLUSTER_UNREACHABLE, "cluster byo did not answer", retry=True), 1, T0)
    assert condition(update.status, "Running")["status"] == "Unknown"
    assert update.phase == JobPhase.RUNNING.value


def test_image_pull_error_is_reported(resolved: ResolvedJob) -> None:
    waiting = {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"kubeclip:typo\""}}, "image": "kubeclip:typo"}
    stuck = pod("w-1", phase="Pending", node="kwok-l40-0", containerStatuses=[waiting])
    update = build_status({}, resolved, Observation(trainer_job(), [stuck]), T0)
    running = condition(valid(update.status), "Running")
    assert running["reason"] == ConditionReason.IMAGE_PULL_FAILED.value
    assert "kubeclip:typo" in running["message"]
    assert "--trainer-image" in running["message"]
    assert update.transitions[-1].reason == ConditionReason.IMAGE_PULL_FAILED.value


def test_evicted_pod_retries_without_counting(resolved: ResolvedJob) -> None:
    running = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=3)), T0)
    evicted = pod("w-1", phase="Failed", node="n", reason="Evicted", message="The node was low on resource: memory.")
    progress = report(state="Running", pod="w-1", step=3, checkpoints=[{"name": "checkpoint-2", "step": 2}])
    update = build_status(running.status, resolved, Observation(trainer_job(), [evicted], progress), T0 + timedelta(minutes=1))
    running_condition = condition(valid(update.status), "Running")
    assert running_condition["status"] == "False"
    assert running_condition["reason"] == ConditionReason.RETRYING.value
    assert "was evicted: The node was low on resource: memory." in running_condition["message"]
    assert "does not count against spec.backoffLimit" in running_condition["message"]
    assert "checkpoint-2" in running_condition["message"]
    assert update.status["failedAttempts"] == 0
    assert update.phase == JobPhase.SCHEDULING.value


def test_succeeded_pod_before_job_completes_is_no_retry(resolved: ResolvedJob) -> None:
    failed_pod = pod("w-1", phase="Failed", node="n", created="2026-12-04T10:00:00Z", containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}])
    done_pod = pod("w-2", phase="Succeeded", node="n", created="2026-12-04T10:05:00Z")
    running = build_status({}, resolved, Observation(trainer_job(failed=1), [failed_pod, pod("w-2", phase="Running", node="n", created="2026-12-04T10:05:00Z")],
                                                    report(state="Running", pod="w-2", step=9)), T0)  # fmt: skip
    update = build_status(running.status, resolved, Observation(trainer_job(failed=1), [failed_pod, done_pod], report(state="Succeeded", pod="w-2", step=10)), T0)
    assert update.transitions == []
    assert update.phase == JobPhase.RUNNING.value


def test_uncounted_failure_waits_for_job_controller(resolved: ResolvedJob) -> None:
    running = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=3)), T0)
    failed_pod = pod("w-1", phase="Failed", node="n", containerStatuses=[{"state": {"terminated": {"exitCode": 3}}}])
    update = build_status(running.status, resolved, Observation(trainer_job(), [failed_pod]), T0)
    assert [transition.reason for transition in update.transitions] == []


def test_replacement_pod_starts_from_false(resolved: ResolvedJob) -> None:
    first = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=3)), T0)
    update = build_status(first.status, resolved, Observation(trainer_job(), [pod("w-2", phase="Running", node="n")], report(state="Running", pod="w-1", step=3)), T0)
    assert condition(update.status, "Running")["reason"] == ConditionReason.TRAINER_STARTING.value
    assert update.status["workload"]["podName"] == "w-2"


def test_bad_report_values_keep_status_valid(resolved: ResolvedJob) -> None:
    progress = report(state="Running", pod="w-1", step=-4, totalSteps="many", loss="low", updatedTime="now", modelUri=7,
                      evaluation={"loss": None, "imageToTextRecallAt1": "best"}, checkpoints=[{"name": "c", "step": -1}, "checkpoint-3"])  # fmt: skip
    update = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], progress), T0)
    status = valid(update.status)
    assert "progress" not in status
    assert "evaluation" not in status
    assert "modelUri" not in status
    assert status["checkpoints"] == []
    assert condition(status, "Running")["reason"] == ConditionReason.TRAINER_RUNNING.value


def test_transitions_of_first_pass_once_per_type(resolved: ResolvedJob) -> None:
    update = build_status({}, resolved, Observation(trainer_job(), [pod("w-1", phase="Running", node="n")], report(state="Running", pod="w-1", step=1)), T0)
    assert [(transition.type.value, transition.reason) for transition in update.transitions] == [("Scheduled", "PodScheduled"), ("Running", "TrainerRunning")]


def test_attempt_number_counts_failed_pods(resolved: ResolvedJob) -> None:
    # The Job controller has counted the first failure but not yet the second.
    failed = [pod(f"w-{index}", phase="Failed", node="n", created=f"2026-12-04T10:0{index}:00Z",
                  containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}]) for index in (1, 2)]  # fmt: skip
    update = build_status({}, resolved, Observation(trainer_job(failed=1), failed), T0)
    assert condition(update.status, "Running")["message"].startswith("attempt 2 failed: pod w-2 exited with code 1")
    assert update.status["failedAttempts"] == 1
