"""Fixtures for the operator's end-to-end tests on the real local control plane.

The operator runs as a subprocess with the Helm chart's RBAC; the pod runner plays the
kubelet's container runtime for trainer pods on the simulated GPU nodes; moto serves
the S3 bucket that holds the dataset and the outputs.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.controlplane import ControlPlane, create_namespace, wait_for
from tests.support.datasets import build_tinted_photos_zip
from tests.support.objectstores import S3Server
from tests.support.operator_access import operator_kubeconfig
from tests.support.operator_process import OperatorProcess
from tests.support.pod_runner import PodRunner

GROUP, VERSION = "kubeclip.dev", "v1alpha1"
DATASET_KEY = "datasets/tinted.zip"
#: Pools of the Managed ClipCluster, with the labels the simulated nodes carry (kubeclip/dev/kwok_config.py).
MANAGED_POOLS = [
    {"gpuType": "H100", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    {"gpuType": "A100", "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    {"gpuType": "L40", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
]  # fmt: skip


@pytest.fixture(scope="package")
def home(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The home cluster with the CRDs, the operator's RBAC and the Managed ClipCluster."""
    directory = tmp_path_factory.mktemp("operator-access")
    kubeconfig = operator_kubeconfig(cluster, directory)
    apply_cluster_object(cluster, "managed", {"type": "Managed", "gpuPools": MANAGED_POOLS})
    yield {"plane": cluster, "kubeconfig": kubeconfig}


@pytest.fixture(scope="package")
def bucket(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    archive = build_tinted_photos_zip(tmp_path_factory.mktemp("dataset") / "tinted.zip", count=48)
    s3_server.client().upload_file(str(archive), s3_server.bucket, DATASET_KEY)
    return s3_server


@pytest.fixture(scope="package")
def runner(home: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    environment = {"AWS_EC2_METADATA_DISABLED": "true", "KUBECLIP_PROGRESS_INTERVAL_SECONDS": "1", "OMP_NUM_THREADS": "1",
                   "KUBECLIP_METRICS_PORT": "0"}  # fmt: skip
    with PodRunner(home["plane"], work_dir=tmp_path_factory.mktemp("pods"), extra_env=environment) as pod_runner:
        yield pod_runner


@pytest.fixture(scope="package")
def operator(home: dict[str, Any], runner: PodRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(home["kubeconfig"], tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield process
    process.stop()


@pytest.fixture()
def namespace(home: dict[str, Any], bucket: S3Server) -> Iterator[str]:
    """A fresh namespace with the S3 credentials Secret ``s3-credentials``; its jobs are deleted afterwards.

    Deleting them stops their trainers, which would otherwise hold simulated GPUs and CPU time in later tests.
    """
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    plane: ControlPlane = home["plane"]
    create_namespace(plane, name)
    plane.core.create_namespaced_secret(name, s3_secret("s3-credentials", bucket))
    yield name
    api = client.CustomObjectsApi(plane.api_client)
    for job in api.list_namespaced_custom_object(GROUP, VERSION, name, "cliptrainingjobs")["items"]:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, name, "cliptrainingjobs", job["metadata"]["name"])
        except ApiException as error:
            # A job the test deleted itself may finish its deletion between the list and this call.
            if error.status != 404:
                raise
    wait_for(lambda: not plane.core.list_namespaced_pod(name, label_selector="app.kubernetes.io/name=kubeclip-trainer").items,
             f"the trainer pods of namespace {name} are gone", timeout=150)  # fmt: skip


def s3_secret(name: str, server: S3Server) -> dict[str, Any]:
    values = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key, "AWS_ENDPOINT_URL": server.endpoint_url}
    return {"metadata": {"name": name}, "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}}


def apply_cluster_object(plane: ControlPlane, name: str, spec: dict[str, Any]) -> None:
    api = client.CustomObjectsApi(plane.api_client)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClipCluster", "metadata": {"name": name}, "spec": spec}
    try:
        api.create_cluster_custom_object(GROUP, VERSION, "clipclusters", body)
    except ApiException as error:
        if error.status != 409:
            raise
        current = api.get_cluster_custom_object(GROUP, VERSION, "clipclusters", name)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        api.replace_cluster_custom_object(GROUP, VERSION, "clipclusters", name, body)


def training_job(name: str, namespace: str, server: S3Server, *, gpu: str = "L40", cluster: str | None = None, **training: Any) -> dict[str, Any]:
    """A ClipTrainingJob that trains the Small preset for a few seconds on the tinted photos in S3."""
    infrastructure: dict[str, Any] = {"gpuType": gpu}
    if cluster is not None:
        infrastructure.update(type="BringYourOwn", clusterRef={"name": cluster})
    settings = {"epochs": 2, "perDeviceTrainBatchSize": 8, "perDeviceEvalBatchSize": 16, "learningRate": "3e-4", "warmupSteps": 2,
                "torchDtype": "float32", "loggingSteps": 1, "evalSteps": 4, "saveSteps": 4, "saveTotalLimit": 2, "dataLoaderWorkers": 0}  # fmt: skip
    settings.update(training)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"preset": "Small", "projectionDim": 64},
            "dataset": {"source": {"uri": f"s3://{server.bucket}/{DATASET_KEY}", "region": server.region, "secretRef": {"name": "s3-credentials"}},
                        "promptMaxLength": 32, "trainSplitRatio": 0.75, "validationSplitRatio": 0.25},  # fmt: skip
            "infrastructure": infrastructure,
            "training": settings,
            "output": {"storageUri": f"s3://{server.bucket}/runs/{namespace}/{name}", "region": server.region, "secretRef": {"name": "s3-credentials"}},
        },
    }


def create_job(plane: ControlPlane, body: dict[str, Any]) -> dict[str, Any]:
    namespace = body["metadata"]["namespace"]
    return client.CustomObjectsApi(plane.api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, "cliptrainingjobs", body)


def read_job(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(plane.api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "cliptrainingjobs", name)


def patch_job(plane: ControlPlane, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(plane.api_client).patch_namespaced_custom_object(GROUP, VERSION, namespace, "cliptrainingjobs", name, patch)


def condition_of(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((item for item in (job.get("status") or {}).get("conditions", []) if item["type"] == type_), None)


def has_condition(job: dict[str, Any], type_: str, status: str = "True", reason: str | None = None) -> bool:
    found = condition_of(job, type_)
    return found is not None and found["status"] == status and (reason is None or found["reason"] == reason)


def events_of(plane: ControlPlane, namespace: str, name: str) -> list[Any]:
    events = plane.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ClipTrainingJob")
    return sorted(events.items, key=lambda event: event.metadata.creation_timestamp)
