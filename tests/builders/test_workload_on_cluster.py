"""The built workload against a real API server: Pod Security admission, scheduling and RBAC.

kwok plays the kubelet of the simulated GPU nodes, so the scheduler and the admission
plugins decide as in a real cluster, but no container runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from kubeclip.api.job import API_GROUP
from kubeclip.builders.naming import JOB_UID_LABEL, progress_configmap_name, workload_name
from kubeclip.builders.workload import WorkloadRequest, build_workload
from kubeclip.dev import cluster as dev_cluster
from kubeclip.dev.kwok_config import GPU_RESOURCE, NODE_POOLS, node_name
from tests.builders.factories import H100_POOL, L40_POOL, make_job, make_pool, make_request
from tests.support.controlplane import ControlPlane, create_namespace, wait_for

pytestmark = pytest.mark.controlplane

RESTRICTED_LABELS = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
# The job's own output Secret on GCS, so the pod also mounts a Secret volume.
GCS_OUTPUT = {"storageUri": "gs://models/flowers", "secretRef": {"name": "gcs-key"}}


def _nodes_of_pool(pool_name: str) -> set[str]:
    pool = next(pool for pool in NODE_POOLS if pool.name == pool_name)
    return {node_name(pool, index) for index in range(pool.node_count)}


@pytest.fixture
def restricted_namespace(cluster: ControlPlane) -> Iterator[str]:
    """Create a namespace that enforces the restricted level; delete it and wait until its pods are gone,
    so later tests find the simulated GPUs free."""
    name = f"builders-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name, RESTRICTED_LABELS)
    yield name
    # The Jobs go first. While a Job with a podFailurePolicy exists, the Job controller keeps
    # its tracking finalizer on a deleted pod until the pod's phase is terminal. kwok never
    # sets a terminal phase on a deleted pod, so a namespace deletion alone waits forever.
    client.BatchV1Api(cluster.api_client).delete_collection_namespaced_job(name, propagation_policy="Background")
    cluster.core.delete_namespace(name)
    wait_for(lambda: not cluster.core.list_namespaced_pod(name).items, f"the pods of namespace {name} are deleted")


def _request(namespace: str, name: str, pool: dict[str, Any] = H100_POOL, **spec_changes: Any) -> WorkloadRequest:
    job = make_job(name, namespace, infrastructure={"gpuType": pool["gpuType"]}, **spec_changes)
    return make_request(job, job_uid=str(uuid.uuid4()), pool=make_pool(pool))


def _create(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    for item in objects:
        utils.create_from_dict(plane.api_client, item, namespace=item["metadata"]["namespace"])


def _create_secret(plane: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    plane.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})


def _pods(plane: ControlPlane, request: WorkloadRequest) -> list[client.V1Pod]:
    return plane.core.list_namespaced_pod(request.namespace, label_selector=f"{JOB_UID_LABEL}={request.job_uid}").items


def _failed_creates(plane: ControlPlane, request: WorkloadRequest) -> list[str]:
    selector = f"involvedObject.kind=Job,involvedObject.name={request.workload},reason=FailedCreate"
    return [event.message for event in plane.core.list_namespaced_event(request.namespace, field_selector=selector).items]


def _wait_for_admitted_pod(plane: ControlPlane, request: WorkloadRequest) -> client.V1Pod:
    """Wait until the Job controller created the pod or reported that admission rejected it."""
    wait_for(
        lambda: bool(_pods(plane, request) or _failed_creates(plane, request)),
        f"Job {request.workload} creates its pod or reports FailedCreate",
    )
    assert _failed_creates(plane, request) == []
    pods = _pods(plane, request)
    assert len(pods) == 1
    return pods[0]


def _is_unschedulable(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(condition.type == "PodScheduled" and condition.reason == "Unschedulable" for condition in conditions)


def test_pod_passes_restricted_and_lands_on_h100(cluster: ControlPlane, restricted_namespace: str) -> None:
    request = _request(restricted_namespace, "flowers", output=GCS_OUTPUT)
    _create_secret(cluster, restricted_namespace, "aws-credentials", {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example"})
    _create_secret(cluster, restricted_namespace, "gcs-key", {"service-account.json": "{}"})

    _create(cluster, build_workload(request))
    pod = _wait_for_admitted_pod(cluster, request)

    volumes = {volume.name for volume in pod.spec.volumes}
    assert {"config", "shm", "home", "tmp", "gcs-credentials"} <= volumes
    wait_for(lambda: bool(_pods(cluster, request)[0].spec.node_name), f"pod {pod.metadata.name} is scheduled")
    assert _pods(cluster, request)[0].spec.node_name in _nodes_of_pool("h100")


def test_pvc_output_pod_passes_restricted(cluster: ControlPlane, restricted_namespace: str) -> None:
    request = _request(restricted_namespace, "flowers-pvc", output={"storageUri": "pvc://training-output/runs/flowers"})

    _create(cluster, build_workload(request))
    pod = _wait_for_admitted_pod(cluster, request)

    claims = [volume.persistent_volume_claim.claim_name for volume in pod.spec.volumes if volume.persistent_volume_claim]
    assert claims == ["training-output"]


def test_l40_pool_never_lands_on_l40s(cluster: ControlPlane, restricted_namespace: str) -> None:
    (l40_node,) = _nodes_of_pool("l40")
    selector = ",".join(f"{key}={value}" for key, value in L40_POOL["nodeSelector"].items())
    assert [node.metadata.name for node in cluster.core.list_node(label_selector=selector).items] == [l40_node]
    # One job more than the L40 node has free GPUs: the last must wait rather than take an L40S.
    free_gpus = _free_gpus(cluster, l40_node)
    requests = [_request(restricted_namespace, f"l40-{index}", L40_POOL) for index in range(free_gpus + 1)]

    for request in requests:
        _create(cluster, build_workload(request))

    def placed() -> list[client.V1Pod]:
        return [pod for request in requests for pod in _pods(cluster, request)]

    wait_for(
        lambda: sum(bool(pod.spec.node_name) for pod in placed()) == free_gpus and sum(_is_unschedulable(pod) for pod in placed()) == 1,
        f"{free_gpus} L40 pods are bound and one is unschedulable",
        timeout=120,
    )
    assert [pod.spec.node_name for pod in placed() if pod.spec.node_name] == [l40_node] * free_gpus


def _free_gpus(plane: ControlPlane, node: str) -> int:
    allocatable = int(plane.core.read_node(node).status.allocatable[GPU_RESOURCE])
    pods = plane.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    used = sum(
        int((container.resources.requests or {}).get(GPU_RESOURCE, "0"))
        for pod in pods
        if pod.status.phase not in ("Succeeded", "Failed")
        for container in pod.spec.containers
    )
    return allocatable - used


def _allowed(plane: ControlPlane, request: WorkloadRequest, verb: str, resource: str, name: str | None, group: str = "", subresource: str | None = None) -> bool:
    namespace = request.namespace
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{request.workload}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, name=name, subresource=subresource
            ),
        )
    )
    return client.AuthorizationV1Api(plane.api_client).create_subject_access_review(review).status.allowed


def test_role_allows_only_own_progress(cluster: ControlPlane, restricted_namespace: str) -> None:
    job_a = _request(restricted_namespace, "job-a")
    job_b = _request(restricted_namespace, "job-b")
    for request in (job_a, job_b):
        _create(cluster, build_workload(request, suspend=True))
    own = progress_configmap_name(job_a.workload)
    other = progress_configmap_name(job_b.workload)

    for verb in ("get", "patch", "update"):
        assert _allowed(cluster, job_a, verb, "configmaps", own), verb
    denied = [
        ("get", "configmaps", other, ""),
        ("patch", "configmaps", other, ""),
        ("get", "configmaps", f"{job_a.workload}-config", ""),
        ("delete", "configmaps", own, ""),
        ("list", "configmaps", None, ""),
        ("create", "configmaps", None, ""),
        ("get", "secrets", "aws-credentials", ""),
        ("list", "secrets", None, ""),
        ("get", "cliptrainingjobs", "job-a", API_GROUP),
        ("patch", "cliptrainingjobs", "job-a", API_GROUP),
        ("get", "pods", None, ""),
    ]
    allowed = [attributes for attributes in denied if _allowed(cluster, job_a, attributes[0], attributes[1], attributes[2], attributes[3])]
    assert allowed == []
    assert not _allowed(cluster, job_a, "patch", "cliptrainingjobs", "job-a", API_GROUP, subresource="status")


def test_service_account_patches_own_progress(cluster: ControlPlane, restricted_namespace: str) -> None:
    job_a = _request(restricted_namespace, "job-a")
    job_b = _request(restricted_namespace, "job-b")
    for request in (job_a, job_b):
        _create(cluster, build_workload(request, suspend=True))
    patch = {"data": {"progress.json": '{"state": "Running", "step": 1}'}}

    with dev_cluster.new_api_client(cluster.kubeconfig) as api_client:
        api_client.set_default_header("Impersonate-User", f"system:serviceaccount:{restricted_namespace}:{job_a.workload}")
        core = client.CoreV1Api(api_client)

        written = core.patch_namespaced_config_map(progress_configmap_name(job_a.workload), restricted_namespace, patch)
        with pytest.raises(ApiException) as other_job:
            core.patch_namespaced_config_map(progress_configmap_name(job_b.workload), restricted_namespace, patch)

    assert written.data == patch["data"]
    assert other_job.value.status == 403


def test_long_job_name_is_accepted(cluster: ControlPlane, restricted_namespace: str) -> None:
    name = "a-very-long-job-name-" + "x" * 42
    request = _request(restricted_namespace, name)

    _create(cluster, build_workload(request))
    pod = _wait_for_admitted_pod(cluster, request)

    assert request.workload == workload_name(restricted_namespace, name)
    assert pod.metadata.name.startswith(f"{request.workload}-")
    assert pod.metadata.labels["kubeclip.dev/job-name"] == name
