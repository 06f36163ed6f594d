"""Jobs whose references are wrong: each waits or fails with a condition and an event that say what to fix,
and a job waiting for a missing object starts once it exists."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.operator.conftest import GROUP, VERSION, apply_cluster_object, condition_of, create_job, events_of, has_condition, read_job, s3_secret, training_job
from tests.operator.test_operator_e2e import wait_job
from tests.support.controlplane import ControlPlane
from tests.support.objectstores import S3Server
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

REFERENCE_TIMEOUT_SECONDS = 60.0


def waiting_with(plane: ControlPlane, namespace: str, name: str, reason: str) -> dict[str, Any]:
    job = wait_job(plane, namespace, name, lambda job: has_condition(job, "Scheduled", "False", reason), f"Scheduled is False with reason {reason}", timeout=REFERENCE_TIMEOUT_SECONDS)
    assert job["status"]["phase"] == "Pending"
    warnings = [event for event in events_of(plane, namespace, name) if event.reason == reason]
    assert warnings and warnings[0].type == "Warning", [event.reason for event in events_of(plane, namespace, name)]
    return job


def delete_job(plane: ControlPlane, namespace: str, name: str) -> None:
    client.CustomObjectsApi(plane.api_client).delete_namespaced_custom_object(GROUP, VERSION, namespace, "cliptrainingjobs", name)


def test_missing_dataset_waits_until_registered(home, operator: OperatorProcess, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    body = training_job("by-ref", namespace, bucket)
    source = body["spec"]["dataset"].pop("source")
    body["spec"]["dataset"]["datasetRef"] = {"name": "tinted-photos"}
    create_job(plane, body)

    job = waiting_with(plane, namespace, "by-ref", "DatasetNotFound")
    assert "ClipDataset 'tinted-photos'" in condition_of(job, "Scheduled")["message"]

    dataset = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClipDataset", "metadata": {"name": "tinted-photos"}, "spec": {"source": source, "description": "48 tinted photos"}}
    client.CustomObjectsApi(plane.api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, "clipdatasets", dataset)
    job = wait_job(plane, namespace, "by-ref", lambda job: has_condition(job, "Succeeded"), "Succeeded with the registered dataset")
    assert job["status"]["evaluation"]


def test_missing_secret_waits_until_created(home, operator: OperatorProcess, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    body = training_job("no-secret", namespace, bucket)
    # Both locations are on S3, so they must share one Secret (the pod has one set of AWS variables).
    body["spec"]["output"]["secretRef"] = body["spec"]["dataset"]["source"]["secretRef"] = {"name": "output-credentials"}
    create_job(plane, body)

    job = waiting_with(plane, namespace, "no-secret", "SecretNotFound")
    assert "Secret 'output-credentials'" in condition_of(job, "Scheduled")["message"]
    plane.core.create_namespaced_secret(namespace, s3_secret("output-credentials", bucket))
    wait_job(plane, namespace, "no-secret", lambda job: has_condition(job, "Scheduled", "True"), "Scheduled once the Secret exists", timeout=REFERENCE_TIMEOUT_SECONDS)
    delete_job(plane, namespace, "no-secret")


def test_unknown_cluster_and_missing_gpu_type_wait(home, operator: OperatorProcess, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    lost = training_job("lost", namespace, bucket)
    lost["spec"]["infrastructure"]["clusterRef"] = {"name": "does-not-exist"}
    create_job(plane, lost)
    job = waiting_with(plane, namespace, "lost", "ClusterNotFound")
    assert "'does-not-exist'" in condition_of(job, "Scheduled")["message"]

    apply_cluster_object(plane, "l40-only", {"type": "Managed", "gpuPools": [{"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"}}]})
    picky = training_job("picky", namespace, bucket, gpu="H100")
    picky["spec"]["infrastructure"]["clusterRef"] = {"name": "l40-only"}
    create_job(plane, picky)
    job = waiting_with(plane, namespace, "picky", "GpuTypeNotOffered")
    assert "offers no H100 GPUs (it offers L40)" in condition_of(job, "Scheduled")["message"]
    for name in ("lost", "picky"):
        delete_job(plane, namespace, name)


def test_job_without_output_fails_at_once(home, operator: OperatorProcess, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    body = training_job("nowhere", namespace, bucket)
    del body["spec"]["output"]
    create_job(plane, body)
    job = wait_job(plane, namespace, "nowhere", lambda job: has_condition(job, "Failed"), "Failed as expected", timeout=REFERENCE_TIMEOUT_SECONDS)
    failed = condition_of(job, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.output.storageUri is required" in failed["message"]
    assert job["status"]["phase"] == "Failed"
    assert not client.BatchV1Api(plane.api_client).list_namespaced_job(namespace).items


def test_full_pool_queues_jobs(home, operator: OperatorProcess, runner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    pool = {"gpuType": "H100", "capacity": 1, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}  # fmt: skip
    apply_cluster_object(plane, "one-at-a-time", {"type": "Managed", "gpuPools": [pool]})
    for name in ("first", "second"):
        # Two epochs, so the job that got the place still runs when the test looks at both.
        body = training_job(name, namespace, bucket, gpu="H100", epochs=2)
        body["spec"]["infrastructure"]["clusterRef"] = {"name": "one-at-a-time"}
        create_job(plane, body)
        wait_job(plane, namespace, name, lambda job: bool((job.get("status") or {}).get("conditions")), "the operator has seen it", timeout=REFERENCE_TIMEOUT_SECONDS)

    queued = [name for name in ("first", "second") if has_condition(read_job(plane, namespace, name), "Scheduled", "False", "WaitingForCapacity")]
    assert len(queued) == 1, "exactly one of the two jobs waits for the pool's single place"
    message = condition_of(read_job(plane, namespace, queued[0]), "Scheduled")["message"]
    assert "capacity" in message
    assert "one-at-a-time" in message
    wait_job(plane, namespace, queued[0], lambda job: has_condition(job, "Succeeded"), "Succeeded once the other job finished")
