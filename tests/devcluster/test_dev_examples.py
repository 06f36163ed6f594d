"""The manifests in examples/dev/ on the development cluster: accepted, bound and schedulable.

The README applies them before examples/cluster-job.yaml: the Managed ClipCluster whose
pools select the simulated GPU nodes, and the volume and claim the job writes to. Each
test renames what it creates, so it never touches objects of other tests or of a user.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import kwok_config
from tests.operator.conftest import MANAGED_POOLS
from tests.support.controlplane import ControlPlane, create_namespace, wait_for
from tests.support.operator_access import install_chart_crds

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GROUP, VERSION = "kubeclip.dev", "v1alpha1"
#: Seconds for the controller manager to bind a claim, and for the scheduler to place or reject a pod.
BIND_TIMEOUT_SECONDS = 30.0
#: GPU pool of the test pods: 16 GPUs on two nodes, which pods that earlier tests of the
#: session leave running do not fill, as they can fill the single 4-GPU L40 node.
POOL_GPU_TYPE = "H100"


def load_example(name: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((EXAMPLES / name).read_text()) if document]


def output_volume_and_claim() -> tuple[dict[str, Any], dict[str, Any]]:
    documents = {document["kind"]: document for document in load_example("dev/output-volume.yaml")}
    return documents["PersistentVolume"], documents["PersistentVolumeClaim"]


def pod_using_claim(claim_name: str) -> dict[str, Any]:
    """A pod like the operator's trainer: the pool's selector and toleration, a GPU and the claim at /mnt/output.

    It lacks the trainer label, so no pod runner of another test starts it.
    """
    pool = next(pool for pool in MANAGED_POOLS if pool["gpuType"] == POOL_GPU_TYPE)
    container = {
        "name": "trainer",
        "image": "kubeclip-trainer:test",
        "resources": {"limits": {kwok_config.GPU_RESOURCE: "1"}},
        "volumeMounts": [{"name": "output", "mountPath": "/mnt/output"}],
    }
    return {
        "metadata": {"name": "uses-claim"},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "output", "persistentVolumeClaim": {"claimName": claim_name}}],
            "nodeSelector": pool["nodeSelector"],
            "tolerations": pool["tolerations"],
        },
    }


def scheduled_condition(plane: ControlPlane, namespace: str, name: str) -> client.V1PodCondition | None:
    conditions = plane.core.read_namespaced_pod(name, namespace).status.conditions or []
    return next((condition for condition in conditions if condition.type == "PodScheduled"), None)


def wait_until_scheduler_decides(plane: ControlPlane, namespace: str, name: str) -> client.V1PodCondition:
    """Wait until the pod's PodScheduled condition is True or False, and return it."""

    def decided() -> bool:
        condition = scheduled_condition(plane, namespace, name)
        return condition is not None and condition.status in ("True", "False")

    wait_for(decided, f"the scheduler decides on pod {namespace}/{name}", timeout=BIND_TIMEOUT_SECONDS)
    return scheduled_condition(plane, namespace, name)


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"examples-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def volume_name(cluster: ControlPlane) -> Iterator[str]:
    """A unique name for the cluster-scoped PersistentVolume of one test; the volume is deleted afterwards."""
    name = f"kubeclip-output-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        cluster.core.delete_persistent_volume(name)
    except ApiException as error:
        if error.status != 404:
            raise


# -- without a cluster ------------------------------------------------------------------


def test_cluster_job_claim_is_example_claim():
    volume, claim = output_volume_and_claim()
    job = load_example("cluster-job.yaml")[0]

    claim_name = job["spec"]["output"]["storageUri"].removeprefix("pvc://").split("/")[0]
    assert claim_name == claim["metadata"]["name"]
    assert job["metadata"]["namespace"] == claim["metadata"]["namespace"]
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"]


def test_managed_cluster_pools_match_harness():
    manifest = load_example("dev/managed-cluster.yaml")[0]

    assert manifest["metadata"]["name"] == "managed"
    assert manifest["spec"]["type"] == "Managed"
    assert manifest["spec"]["gpuPools"] == MANAGED_POOLS


# -- against the development cluster ----------------------------------------------------


@pytest.mark.controlplane
def test_managed_cluster_accepted_and_pools_select_nodes(cluster: ControlPlane):
    install_chart_crds(cluster)
    manifest = load_example("dev/managed-cluster.yaml")[0]
    manifest["metadata"]["name"] = f"managed-{uuid.uuid4().hex[:8]}"

    accepted = client.CustomObjectsApi(cluster.api_client).create_cluster_custom_object(GROUP, VERSION, "clipclusters", manifest, dry_run="All")

    assert accepted["spec"]["gpuPools"] == manifest["spec"]["gpuPools"]
    expected_nodes = {"H100": {"kwok-h100-0", "kwok-h100-1"}, "A100": {"kwok-a100-0"}, "L40": {"kwok-l40-0"}}
    for pool in accepted["spec"]["gpuPools"]:
        selector = ",".join(f"{key}={value}" for key, value in pool["nodeSelector"].items())
        nodes = {node.metadata.name for node in cluster.core.list_node(label_selector=selector).items}
        assert nodes == expected_nodes[pool["gpuType"]], pool


@pytest.mark.controlplane
def test_output_claim_binds_and_pod_schedules(cluster: ControlPlane, namespace: str, volume_name: str):
    volume, claim = output_volume_and_claim()
    volume["metadata"]["name"] = volume_name
    claim["metadata"]["namespace"] = namespace
    claim["spec"]["volumeName"] = volume_name
    cluster.core.create_persistent_volume(volume)
    cluster.core.create_namespaced_persistent_volume_claim(namespace, claim)

    def claim_bound() -> bool:
        return cluster.core.read_namespaced_persistent_volume_claim(claim["metadata"]["name"], namespace).status.phase == "Bound"

    wait_for(claim_bound, f"claim {namespace}/{claim['metadata']['name']} is Bound", timeout=BIND_TIMEOUT_SECONDS)
    bound_volume = cluster.core.read_persistent_volume(volume_name)
    assert bound_volume.spec.claim_ref.namespace == namespace
    assert bound_volume.spec.claim_ref.name == claim["metadata"]["name"]

    cluster.core.create_namespaced_pod(namespace, pod_using_claim(claim["metadata"]["name"]))

    condition = wait_until_scheduler_decides(cluster, namespace, "uses-claim")
    assert condition.status == "True", condition.message
    node_name = cluster.core.read_namespaced_pod("uses-claim", namespace).spec.node_name
    assert node_name in ("kwok-h100-0", "kwok-h100-1")
    assert cluster.core.read_node(node_name).metadata.annotations[kwok_config.FAKE_NODE_ANNOTATION] == "fake"


@pytest.mark.controlplane
def test_pod_with_unbound_claim_unschedulable(cluster: ControlPlane, namespace: str):
    # The same claim with no volume to bind: the reason examples/dev/output-volume.yaml ships a volume.
    _, claim = output_volume_and_claim()
    claim["metadata"]["namespace"] = namespace
    del claim["spec"]["volumeName"]
    cluster.core.create_namespaced_persistent_volume_claim(namespace, claim)

    cluster.core.create_namespaced_pod(namespace, pod_using_claim(claim["metadata"]["name"]))

    condition = wait_until_scheduler_decides(cluster, namespace, "uses-claim")
    assert condition.status == "False"
    assert condition.reason == "Unschedulable"
    assert "unbound" in condition.message
    assert cluster.core.read_namespaced_pod("uses-claim", namespace).spec.node_name is None
