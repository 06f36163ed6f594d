"""Bring-your-own clusters: a job in the home cluster trains on the second control plane.

The operator reaches the second cluster only through the kubeconfig Secret of a
ClipCluster, as the identity that the chart's ``mode: remoteTarget`` creates there. The
trainer reports progress to its ConfigMap in the remote cluster; nothing in the remote
cluster can write to the home cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.operator.conftest import apply_cluster_object, condition_of, create_job, has_condition, read_job, training_job
from tests.operator.test_operator_e2e import objects_left, wait_job
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.objectstores import S3Server
from tests.support.operator_access import remote_target_kubeconfig
from tests.support.operator_process import OperatorProcess
from tests.support.pod_runner import PodRunner

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

REMOTE_NAMESPACE = "kubeclip-jobs"
SECRET_NAMESPACE = "kubeclip-system"
L40_POOL = {"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}  # fmt: skip


@pytest.fixture(scope="module")
def remote(second_cluster: ControlPlane, home: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("byo")
    kubeconfig = remote_target_kubeconfig(second_cluster, directory, namespace=REMOTE_NAMESPACE)
    plane: ControlPlane = home["plane"]
    put_kubeconfig_secret(plane, "byo-kubeconfig", kubeconfig.read_text())
    apply_cluster_object(plane, "byo", {
        "type": "BringYourOwn", "namespace": REMOTE_NAMESPACE, "gpuPools": [L40_POOL],
        "kubeconfigSecretRef": {"name": "byo-kubeconfig", "namespace": SECRET_NAMESPACE},
    })  # fmt: skip
    environment = {"AWS_EC2_METADATA_DISABLED": "true", "KUBECLIP_PROGRESS_INTERVAL_SECONDS": "1", "OMP_NUM_THREADS": "1",
                   "KUBECLIP_METRICS_PORT": "0"}  # fmt: skip
    with PodRunner(second_cluster, work_dir=directory / "pods", extra_env=environment) as runner:
        yield {"plane": second_cluster, "runner": runner, "kubeconfig": kubeconfig}


def put_kubeconfig_secret(plane: ControlPlane, name: str, kubeconfig: str) -> None:
    body = {"metadata": {"name": name, "namespace": SECRET_NAMESPACE}, "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()}}
    try:
        plane.core.create_namespaced_secret(SECRET_NAMESPACE, body)
    except client.exceptions.ApiException as error:
        if error.status != 409:
            raise
        plane.core.replace_namespaced_secret(name, SECRET_NAMESPACE, body)


def test_byo_job_trains_remotely_and_reports_home(home, remote, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    remote_plane: ControlPlane = remote["plane"]
    created = create_job(plane, training_job("far", namespace, bucket, cluster="byo"))
    uid = created["metadata"]["uid"]

    job = wait_job(plane, namespace, "far", lambda job: has_condition(job, "Succeeded"), "Succeeded in the remote cluster")
    status = job["status"]
    assert status["workload"]["cluster"] == "byo" and status["workload"]["namespace"] == REMOTE_NAMESPACE
    assert status["progress"]["step"] == status["progress"]["totalSteps"]
    assert status["evaluation"] and status["modelUri"].endswith("/far/model")
    assert objects_left(plane, namespace, uid) == {}, "nothing of the trainer may run in the home cluster"
    remote_objects = objects_left(remote_plane, REMOTE_NAMESPACE, uid)
    assert remote_objects["jobs"] and remote_objects["pods"]
    copies = remote_plane.core.list_namespaced_secret(REMOTE_NAMESPACE, label_selector=f"kubeclip.dev/job-uid={uid}").items
    assert {secret.metadata.name for secret in copies} == {f"{status['workload']['jobName']}-dataset", f"{status['workload']['jobName']}-output"}

    def reachable() -> bool:
        cluster = client.CustomObjectsApi(plane.api_client).get_cluster_custom_object("kubeclip.dev", "v1alpha1", "clipclusters", "byo")
        return any(item["type"] == "Reachable" and item["status"] == "True" for item in (cluster.get("status") or {}).get("conditions", []))

    wait_for(reachable, "ClipCluster byo reports Reachable", timeout=90)
    client.CustomObjectsApi(plane.api_client).delete_namespaced_custom_object("kubeclip.dev", "v1alpha1", namespace, "cliptrainingjobs", "far")
    wait_for(lambda: not objects_left(remote_plane, REMOTE_NAMESPACE, uid), "the remote trainer objects are deleted", timeout=120)
    assert not remote_plane.core.list_namespaced_secret(REMOTE_NAMESPACE, label_selector=f"kubeclip.dev/job-uid={uid}").items


def test_revoked_credentials_are_renewed_without_restart(home, remote, operator: OperatorProcess, namespace: str, bucket: S3Server, tmp_path: Path) -> None:
    plane: ControlPlane = home["plane"]
    remote_plane: ControlPlane = remote["plane"]
    account = yaml.safe_load(remote["kubeconfig"].read_text())["users"][0]["name"]
    # A token bound to a Secret stops working when that Secret is deleted: a revoked credential.
    anchor = remote_plane.core.create_namespaced_secret(REMOTE_NAMESPACE, {"metadata": {"generateName": "token-anchor-"}})
    revocable = bound_token(remote_plane, account, anchor)
    document = yaml.safe_load(remote["kubeconfig"].read_text())
    document["users"][0]["user"]["token"] = revocable
    put_kubeconfig_secret(plane, "byo-kubeconfig", yaml.safe_dump(document))
    remote_plane.core.delete_namespaced_secret(anchor.metadata.name, REMOTE_NAMESPACE)

    create_job(plane, training_job("renew", namespace, bucket, cluster="byo", epochs=1))
    job = wait_job(plane, namespace, "renew", lambda job: has_condition(job, "Scheduled", "False", "ClusterUnreachable"), "the revoked token is reported", timeout=120)
    assert "byo" in condition_of(job, "Scheduled")["message"]

    put_kubeconfig_secret(plane, "byo-kubeconfig", remote["kubeconfig"].read_text())
    job = wait_job(plane, namespace, "renew", lambda job: has_condition(job, "Scheduled", "True"), "scheduled with the renewed kubeconfig", timeout=120)
    assert read_job(plane, namespace, "renew")["status"]["workload"]["cluster"] == "byo"


def bound_token(plane: ControlPlane, account: str, anchor: client.V1Secret) -> str:
    reference = client.V1BoundObjectReference(api_version="v1", kind="Secret", name=anchor.metadata.name, uid=anchor.metadata.uid)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600, bound_object_ref=reference))
    return plane.core.create_namespaced_service_account_token(account, REMOTE_NAMESPACE, request).status.token
