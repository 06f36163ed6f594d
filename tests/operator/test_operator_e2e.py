"""The operator end to end on the real control plane: apply a job, watch it train, fail, retry, suspend and go away.

Each test applies ClipTrainingJobs to the home cluster; the operator (a subprocess with
the Helm chart's RBAC) creates the trainer Job; the scheduler binds its pod to a
simulated GPU node; the pod runner runs the trainer as a local process with the pod's
environment and reports its exit as the pod's; the trainer reports progress to its
ConfigMap, and the operator copies it into the job's status.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.operator.conftest import (
    condition_of,
    create_job,
    events_of,
    has_condition,
    patch_job,
    read_job,
    training_job,
)
from tests.support.controlplane import ControlPlane, kubectl, wait_for
from tests.support.objectstores import S3Server
from tests.support.operator_process import OperatorProcess
from tests.support.pod_runner import PodRunner

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

#: Seconds a small training may take from apply to Succeeded on a loaded 2-core machine.
TRAINING_TIMEOUT_SECONDS = 300.0
UID_LABEL = "kubeclip.dev/job-uid"


def wait_job(plane: ControlPlane, namespace: str, name: str, predicate, description: str, timeout: float = TRAINING_TIMEOUT_SECONDS) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        found["job"] = read_job(plane, namespace, name)
        failed = condition_of(found["job"], "Failed")
        if failed and failed["status"] == "True" and "Failed" not in description:
            raise AssertionError(f"job {namespace}/{name} failed while waiting until {description}: {failed}")
        return predicate(found["job"])

    wait_for(check, f"job {namespace}/{name}: {description}", timeout=timeout)
    return found["job"]


def trainer_pods(plane: ControlPlane, namespace: str, uid: str) -> list[client.V1Pod]:
    return plane.core.list_namespaced_pod(namespace, label_selector=f"{UID_LABEL}={uid}").items


def objects_left(plane: ControlPlane, namespace: str, uid: str) -> dict[str, list[str]]:
    selector = f"{UID_LABEL}={uid}"
    rbac, batch = client.RbacAuthorizationV1Api(plane.api_client), client.BatchV1Api(plane.api_client)
    listings = {
        "jobs": batch.list_namespaced_job(namespace, label_selector=selector),
        "pods": plane.core.list_namespaced_pod(namespace, label_selector=selector),
        "configmaps": plane.core.list_namespaced_config_map(namespace, label_selector=selector),
        "serviceaccounts": plane.core.list_namespaced_service_account(namespace, label_selector=selector),
        "roles": rbac.list_namespaced_role(namespace, label_selector=selector),
        "rolebindings": rbac.list_namespaced_role_binding(namespace, label_selector=selector),
    }
    return {kind: [item.metadata.name for item in listing.items] for kind, listing in listings.items() if listing.items}


def test_applied_job_trains_and_reports(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server, tmp_path: Path) -> None:
    plane: ControlPlane = home["plane"]
    # JSON, because PyYAML writes the string "3e-4" unquoted and kubectl's YAML 1.2 parser reads a number.
    manifest = tmp_path / "job.json"
    manifest.write_text(json.dumps(training_job("photos", namespace, bucket)))
    applied = kubectl(plane, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr

    waited = kubectl(
        plane, "wait", "--for=condition=Succeeded", f"--timeout={int(TRAINING_TIMEOUT_SECONDS)}s", "-n", namespace, "cliptrainingjob/photos",
        timeout=TRAINING_TIMEOUT_SECONDS + 30,
    )
    job = read_job(plane, namespace, "photos")
    assert waited.returncode == 0, f"{waited.stderr}\nstatus: {job.get('status')}\noperator log:\n{operator.log()[-4000:]}"

    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["progress"]["step"] == status["progress"]["totalSteps"] > 0
    assert status["progress"]["progressPercentage"] == 100
    assert float(status["progress"]["loss"]) > 0
    assert {"imageToTextRecallAt1", "textToImageRecallAt5", "loss"} <= status["evaluation"].keys()
    assert status["nodeName"].startswith("kwok-l40-")
    assert status["gpuType"] == "L40"
    assert status["resolvedSettings"]["learningRate"] == "3e-4"
    assert status["checkpoints"]
    assert status["startTime"] <= status["completionTime"]
    assert status["modelUri"] == f"s3://{bucket.bucket}/runs/{namespace}/photos/model"
    stored = bucket.client().list_objects_v2(Bucket=bucket.bucket, Prefix=f"runs/{namespace}/photos/model/")
    assert any(item["Key"].endswith("model.safetensors") for item in stored.get("Contents", []))

    reasons = [event.reason for event in events_of(plane, namespace, "photos")]
    assert {"PodScheduled", "TrainerRunning", "TrainingCompleted"} <= set(reasons), reasons
    printed = kubectl(plane, "get", "ctj", "-n", namespace, "photos")
    assert "Succeeded" in printed.stdout
    assert "L40" in printed.stdout
    assert "100" in printed.stdout
    secret_value = bucket.secret_access_key
    assert secret_value not in str(job)
    assert secret_value not in operator.log()
    metrics = operator.metrics()
    succeeded = re.search(r'kubeclip_operator_jobs\{gpu_type="L40",phase="Succeeded"\} ([0-9.]+)', metrics)
    assert succeeded and float(succeeded.group(1)) >= 1, metrics
    assert re.search(r'kubeclip_operator_scheduling_delay_seconds_count\{gpu_type="L40"\} [1-9]', metrics), metrics


def test_job_without_free_gpu_shows_scheduler_reason(home, operator: OperatorProcess, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    # The simulated A100 node has 8 GPUs, and a job cannot get one while a pod uses all of them.
    body = training_job("no-gpu", namespace, bucket, gpu="A100")
    hog = {
        "metadata": {"name": "gpu-hog"},
        "spec": {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "hog", "image": "hog:1", "resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
    }
    plane.core.create_namespaced_pod(namespace, hog)
    wait_for(lambda: bool(plane.core.read_namespaced_pod("gpu-hog", namespace).spec.node_name), "the GPU hog is scheduled")
    try:
        create_job(plane, body)
        job = wait_job(plane, namespace, "no-gpu", lambda job: has_condition(job, "Scheduled", "False", "Unschedulable"), "Scheduled is False with reason Unschedulable", timeout=60)
        message = condition_of(job, "Scheduled")["message"]
        assert "Insufficient nvidia.com/gpu" in message
        assert "A100" in message
        assert job["status"]["phase"] == "Scheduling"
        warnings = [event for event in events_of(plane, namespace, "no-gpu") if event.reason == "Unschedulable"]
        assert warnings
        assert warnings[0].type == "Warning"
    finally:
        plane.core.delete_namespaced_pod("gpu-hog", namespace, grace_period_seconds=0)
    wait_job(plane, namespace, "no-gpu", lambda job: has_condition(job, "Scheduled", "True"), "Scheduled once the GPUs are free", timeout=60)


def test_killed_trainer_is_retried_from_checkpoint(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("retry", namespace, bucket, epochs=4))
    uid = created["metadata"]["uid"]
    job = wait_job(plane, namespace, "retry", lambda job: bool((job.get("status") or {}).get("checkpoints")), "a checkpoint is reported")
    first_pod = job["status"]["workload"]["podName"]
    runner.kill(first_pod, signal.SIGKILL)

    job = wait_job(plane, namespace, "retry", lambda job: has_condition(job, "Succeeded"), "Succeeded after the retry")
    assert job["status"]["failedAttempts"] == 1
    pods = trainer_pods(plane, namespace, uid)
    assert len(pods) == 2, [pod.metadata.name for pod in pods]
    second_pod = next(pod.metadata.name for pod in pods if pod.metadata.name != first_pod)
    assert "resum" in runner.log_of(second_pod).lower()
    reasons = [event.reason for event in events_of(plane, namespace, "retry")]
    assert "Retrying" in reasons, reasons


def test_invalid_dataset_fails_without_retry(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    bucket.client().put_object(Bucket=bucket.bucket, Key=f"broken/{namespace}.zip", Body=b"this is not a zip archive")
    body = training_job("broken", namespace, bucket)
    body["spec"]["dataset"]["source"]["uri"] = f"s3://{bucket.bucket}/broken/{namespace}.zip"
    created = create_job(plane, body)

    job = wait_job(plane, namespace, "broken", lambda job: has_condition(job, "Failed"), "Failed")
    failed = condition_of(job, "Failed")
    assert failed["reason"] == "ConfigurationError"
    assert "exited with code 3" in failed["message"]
    assert "zip" in failed["message"].lower()
    assert len(trainer_pods(plane, namespace, created["metadata"]["uid"])) == 1
    assert job["status"]["phase"] == "Failed"
    assert job["status"]["completionTime"]


def test_suspend_keeps_checkpoints_and_resume_continues(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("pause", namespace, bucket, epochs=6))
    uid = created["metadata"]["uid"]
    wait_job(plane, namespace, "pause", lambda job: bool((job.get("status") or {}).get("checkpoints")), "a checkpoint is reported")
    patch_job(plane, namespace, "pause", {"spec": {"suspend": True}})

    job = wait_job(plane, namespace, "pause", lambda job: job.get("status", {}).get("phase") == "Suspended" and not trainer_pods(plane, namespace, uid), "Suspended with no pod left", timeout=150)
    kept = job["status"]["checkpoints"]
    assert kept
    assert has_condition(job, "Suspended", "True", "SuspendedByUser")
    suspended_step = kept[-1]["step"]

    patch_job(plane, namespace, "pause", {"spec": {"suspend": False}})
    job = wait_job(plane, namespace, "pause", lambda job: has_condition(job, "Succeeded"), "Succeeded after resuming")
    assert has_condition(job, "Suspended", "False", "Resumed")
    resumed_pod = job["status"]["workload"]["podName"]
    assert f"checkpoint-{suspended_step}" in runner.log_of(resumed_pod)


def test_deleting_running_job_removes_trainer(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("gone", namespace, bucket, epochs=20))
    uid = created["metadata"]["uid"]
    job = wait_job(plane, namespace, "gone", lambda job: has_condition(job, "Running"), "Running")
    pod_name = job["status"]["workload"]["podName"]

    client.CustomObjectsApi(plane.api_client).delete_namespaced_custom_object("kubeclip.dev", "v1alpha1", namespace, "cliptrainingjobs", "gone")
    try:
        wait_for(lambda: not objects_left(plane, namespace, uid), "every trainer object is deleted", timeout=150)
    except BaseException:
        print(f"left: {objects_left(plane, namespace, uid)}\noperator log:\n{operator.log()[-6000:]}")
        raise
    wait_for(lambda: not runner.is_running(pod_name), "the trainer process has stopped", timeout=150)
    jobs = client.CustomObjectsApi(plane.api_client).list_namespaced_custom_object("kubeclip.dev", "v1alpha1", namespace, "cliptrainingjobs")
    assert jobs["items"] == []


def test_operator_restart_adopts_running_trainer(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("adopt", namespace, bucket, epochs=6))
    uid = created["metadata"]["uid"]
    job = wait_job(plane, namespace, "adopt", lambda job: has_condition(job, "Running"), "Running")
    pod_uid = trainer_pods(plane, namespace, uid)[0].metadata.uid
    operator.kill()
    operator.start()

    job = wait_job(plane, namespace, "adopt", lambda job: has_condition(job, "Succeeded"), "Succeeded under the new operator")
    pods = trainer_pods(plane, namespace, uid)
    assert [pod.metadata.uid for pod in pods] == [pod_uid]
    jobs = client.BatchV1Api(plane.api_client).list_namespaced_job(namespace, label_selector=f"{UID_LABEL}={uid}")
    assert len(jobs.items) == 1


def test_deleted_trainer_job_is_recreated(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    create_job(plane, training_job("recreated", namespace, bucket, epochs=6))
    job = wait_job(plane, namespace, "recreated", lambda job: bool((job.get("status") or {}).get("checkpoints")), "a checkpoint is reported")
    workload = job["status"]["workload"]
    client.BatchV1Api(plane.api_client).delete_namespaced_job(workload["jobName"], namespace, propagation_policy="Background")

    job = wait_job(plane, namespace, "recreated", lambda job: has_condition(job, "Succeeded"), "Succeeded with the new trainer Job")
    warnings = [event for event in events_of(plane, namespace, "recreated") if event.reason == "WorkloadDeleted"]
    assert warnings
    assert warnings[0].type == "Warning"
    assert "resum" in runner.log_of(job["status"]["workload"]["podName"]).lower()


def test_invalid_change_fails_job_and_frees_gpu(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("changed", namespace, bucket, epochs=20))
    uid = created["metadata"]["uid"]
    wait_job(plane, namespace, "changed", lambda job: has_condition(job, "Running"), "Running")
    patch_job(plane, namespace, "changed", {"spec": {"output": {"storageUri": "ftp://example.invalid/out"}}})

    job = wait_job(plane, namespace, "changed", lambda job: has_condition(job, "Failed"), "Failed after the invalid change")
    failed = condition_of(job, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "ftp://example.invalid/out" in failed["message"]
    wait_for(lambda: not trainer_pods(plane, namespace, uid), "the trainer pod is stopped", timeout=150)
    jobs = client.BatchV1Api(plane.api_client).list_namespaced_job(namespace, label_selector=f"{UID_LABEL}={uid}").items
    assert len(jobs) == 1, "the trainer Job stays, with its checkpoints"
    assert jobs[0].spec.suspend, "the trainer Job is suspended, so it frees its GPU"
