"""Tests that the development cluster is a real Kubernetes control plane.

Each test drives a real API behaviour the operator relies on: CEL validation of CRDs,
scheduling on simulated GPU nodes, the Job controller and garbage collector, RBAC,
Pod Security Admission, TokenRequest, and pod outcomes set through kwok.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import kwok_config, versions
from kubeclip.dev.cluster import set_pod_outcome
from tests.support.controlplane import ControlPlane, create_namespace, kubectl, wait_for

pytestmark = pytest.mark.controlplane

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = _unique("test")
    create_namespace(cluster, name)
    yield name
    # The pods hold simulated GPUs; later tests in the session need them free.
    cluster.core.delete_namespace(name)
    wait_for(lambda: not cluster.core.list_namespaced_pod(name).items, f"the pods of namespace {name} are gone", timeout=120)


def _pod(name: str, *, gpu_product: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if gpu_product is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        spec["nodeSelector"] = {"nvidia.com/gpu.product": gpu_product}
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def _read_pod(cluster: ControlPlane, namespace: str, name: str) -> client.V1Pod:
    return cluster.core.read_namespaced_pod(name, namespace)


def _wait_for_phase(cluster: ControlPlane, namespace: str, name: str, phase: str) -> client.V1Pod:
    wait_for(lambda: _read_pod(cluster, namespace, name).status.phase == phase, f"pod {namespace}/{name} is {phase}")
    return _read_pod(cluster, namespace, name)


def _scheduled_condition(pod: client.V1Pod) -> client.V1PodCondition | None:
    return next((condition for condition in pod.status.conditions or [] if condition.type == "PodScheduled"), None)


def _api_error(call: Any) -> ApiException:
    with pytest.raises(ApiException) as raised:
        call()
    return raised.value


def test_crd_cel_rule_rejects_invalid_object(cluster: ControlPlane, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(cluster.api_client)
    group = f"{uuid.uuid4().hex[:8]}.test.kubeclip.dev"
    spec_schema = {
        "type": "object",
        "properties": {"minReplicas": {"type": "integer"}, "replicas": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.minReplicas <= self.replicas", "message": "minReplicas must not exceed replicas"}],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}}}],
        },
    }
    extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(f"widgets.{group}").status.conditions or []
        return any(condition.type == "Established" and condition.status == "True" for condition in conditions)

    wait_for(established, f"CRD widgets.{group} is Established")
    custom = client.CustomObjectsApi(cluster.api_client)
    good = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "good"}, "spec": {"minReplicas": 1, "replicas": 2}}
    bad = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"minReplicas": 3, "replicas": 2}}

    custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", good)
    error = _api_error(lambda: custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", bad))

    assert error.status == 422
    assert "minReplicas must not exceed replicas" in error.body


def test_scheduler_places_h100_pod_on_h100_node(cluster: ControlPlane, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, _pod("trainer", gpu_product=H100))

    pod = _wait_for_phase(cluster, namespace, "trainer", "Running")

    node = cluster.core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert node.metadata.name.startswith("kwok-h100-")


def test_pod_for_missing_gpu_type_stays_pending(cluster: ControlPlane, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, _pod("trainer", gpu_product="NVIDIA-B200"))

    wait_for(lambda: _scheduled_condition(_read_pod(cluster, namespace, "trainer")) is not None, "the scheduler reports on the pod")
    pod = _read_pod(cluster, namespace, "trainer")

    condition = _scheduled_condition(pod)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    assert condition.status == "False"
    assert condition.reason == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in condition.message


def test_l40_pods_never_land_on_l40s_node(cluster: ControlPlane, namespace: str) -> None:
    # Two more pods than the L40 node has GPUs: the overflow must wait rather than take the L40S node.
    l40_gpus = next(pool.gpu_count for pool in kwok_config.NODE_POOLS if pool.name == "l40")
    names = [f"trainer-{index}" for index in range(l40_gpus + 2)]
    for name in names:
        cluster.core.create_namespaced_pod(namespace, _pod(name, gpu_product="NVIDIA-L40"))

    def all_decided() -> bool:
        return all(_scheduled_condition(_read_pod(cluster, namespace, name)) is not None for name in names)

    wait_for(all_decided, f"the scheduler decided on all {len(names)} L40 pods")
    pods = [_read_pod(cluster, namespace, name) for name in names]

    nodes = [pod.spec.node_name for pod in pods]
    assert nodes.count("kwok-l40-0") == l40_gpus
    assert nodes.count(None) == 2
    assert "kwok-l40s-0" not in nodes


def test_job_pod_deleted_by_garbage_collector(cluster: ControlPlane, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api_client)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"}, "spec": {"backoffLimit": 0, "template": {"spec": _pod("unused")["spec"]}}}
    batch.create_namespaced_job(namespace, job)

    def job_pods() -> list[client.V1Pod]:
        return cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items

    wait_for(lambda: len(job_pods()) == 1, "the Job controller created one pod")
    batch.delete_namespaced_job("train", namespace, propagation_policy="Background")

    wait_for(lambda: not job_pods(), "the garbage collector deleted the Job's pod")


def test_deleted_pod_of_job_with_failure_policy_is_replaced(cluster: ControlPlane, namespace: str) -> None:
    # The Job controller keeps a finalizer on the pod until it sees a terminal phase, which
    # the kubelet (here kwok's pod-stop-on-delete Stage) reports for a deleted pod.
    batch = client.BatchV1Api(cluster.api_client)
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]}
    template = {"spec": {**_pod("unused")["spec"], "restartPolicy": "Never"}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"}, "spec": {"backoffLimit": 2, "podFailurePolicy": policy, "template": template}}
    batch.create_namespaced_job(namespace, job)

    def job_pods() -> list[client.V1Pod]:
        return cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items

    wait_for(lambda: len(job_pods()) == 1, "the Job controller created one pod")
    first = job_pods()[0].metadata.name
    _wait_for_phase(cluster, namespace, first, "Running")
    cluster.core.delete_namespaced_pod(first, namespace)

    wait_for(lambda: first not in [pod.metadata.name for pod in job_pods()], "the deleted pod is gone", timeout=60)
    wait_for(lambda: len(job_pods()) == 1, "the Job controller replaced the pod", timeout=60)
    assert batch.read_namespaced_job_status("train", namespace).status.failed == 1


def test_job_completes_when_its_pod_succeeds(cluster: ControlPlane, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api_client)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"}, "spec": {"backoffLimit": 0, "template": {"spec": _pod("unused")["spec"]}}}
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: len(cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items) == 1, "the Job has a pod")
    pod_name = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items[0].metadata.name
    _wait_for_phase(cluster, namespace, pod_name, "Running")

    set_pod_outcome(cluster.api_client, namespace, pod_name, "Succeeded")

    def job_complete() -> bool:
        conditions = batch.read_namespaced_job_status("train", namespace).status.conditions or []
        return any(condition.type == "Complete" and condition.status == "True" for condition in conditions)

    wait_for(job_complete, "the Job controller marks the Job Complete")
    assert batch.read_namespaced_job_status("train", namespace).status.succeeded == 1


def test_running_pod_stays_running_until_outcome_set(cluster: ControlPlane, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, _pod("trainer"))
    _wait_for_phase(cluster, namespace, "trainer", "Running")

    set_pod_outcome(cluster.api_client, namespace, "trainer", "Failed")
    pod = _wait_for_phase(cluster, namespace, "trainer", "Failed")

    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == kwok_config.FAILED_EXIT_CODE
    assert terminated.reason == "Error"


def test_service_account_token_authenticates_without_permissions(cluster: ControlPlane, namespace: str) -> None:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = cluster.core.create_namespaced_service_account_token("robot", namespace, request).status.token
    configuration = client.Configuration()
    configuration.host = cluster.api_client.configuration.host
    configuration.ssl_ca_cert = cluster.api_client.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}

    with client.ApiClient(configuration) as robot:
        review = client.AuthenticationV1Api(robot).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        error = _api_error(lambda: client.CoreV1Api(robot).list_namespaced_pod(namespace))

    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"
    assert error.status == 403
    assert "cannot list resource \\\"pods\\\"" in error.body


def test_privileged_pod_rejected_in_restricted_namespace(cluster: ControlPlane) -> None:
    name = _unique("restricted")
    create_namespace(cluster, name, {"pod-security.kubernetes.io/enforce": "restricted"})
    pod = _pod("privileged")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}

    error = _api_error(lambda: cluster.core.create_namespaced_pod(name, pod))

    assert error.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(error.body)["message"]


def test_second_cluster_is_independent(cluster: ControlPlane, second_cluster: ControlPlane) -> None:
    name = _unique("only-in-first")

    create_namespace(cluster, name)

    assert cluster.state.server != second_cluster.state.server
    assert _api_error(lambda: second_cluster.core.read_namespace(name)).status == 404
    assert {node.metadata.name for node in second_cluster.core.list_node().items} == {node.metadata.name for node in cluster.core.list_node().items}


def test_kubectl_and_server_report_pinned_version(cluster: ControlPlane) -> None:
    result = kubectl(cluster, "version", "--output=json")

    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    assert reported["serverVersion"]["gitVersion"] == versions.KUBERNETES_VERSION
    assert reported["clientVersion"]["gitVersion"] == versions.KUBERNETES_VERSION
