"""The manifests of one job's workload: objects, the batch/v1 Job, the pod template and the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeclip.api.cluster import TrainerResources
from kubeclip.api.job import GpuType
from kubeclip.builders.naming import workload_labels, workload_name
from kubeclip.builders.workload import (
    WorkloadRequest,
    build_secret_copy,
    build_trainer_job,
    build_workload,
    default_resources,
)
from kubeclip.trainer.config import TrainerConfig, validate
from tests.builders.factories import JOB_UID, L40_POOL, TRAINER_IMAGE, make_job, make_pool, make_request

OWNER = {
    "apiVersion": "kubeclip.dev/v1alpha1",
    "kind": "ClipTrainingJob",
    "name": "flowers",
    "uid": JOB_UID,
    "controller": True,
    "blockOwnerDeletion": True,
}
WORKLOAD = workload_name("team-a", "flowers")


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{item['kind']}/{item['metadata']['name']}": item for item in objects}


def _pod(request: WorkloadRequest) -> dict[str, Any]:
    return build_trainer_job(request, suspend=False)["spec"]["template"]


def _container(request: WorkloadRequest) -> dict[str, Any]:
    return _pod(request)["spec"]["containers"][0]


def _trainer_config(request: WorkloadRequest, tmp_path: Path) -> TrainerConfig:
    config_map = build_workload(request)[3]
    path = tmp_path / "trainer.json"
    path.write_text(config_map["data"]["trainer.json"], encoding="utf-8")
    return TrainerConfig.from_file(path)


# Objects


def test_workload_objects_in_creation_order() -> None:
    objects = build_workload(make_request())

    assert [(item["apiVersion"], item["kind"], item["metadata"]["name"]) for item in objects] == [
        ("v1", "ServiceAccount", WORKLOAD),
        ("rbac.authorization.k8s.io/v1", "Role", WORKLOAD),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", WORKLOAD),
        ("v1", "ConfigMap", f"{WORKLOAD}-config"),
        ("v1", "ConfigMap", f"{WORKLOAD}-progress"),
        ("batch/v1", "Job", WORKLOAD),
    ]


def test_every_object_has_namespace_labels_owner() -> None:
    objects = build_workload(make_request(namespace="kubeclip-jobs", owner_reference=OWNER))
    expected_labels = workload_labels("team-a", "flowers", JOB_UID, WORKLOAD)

    for item in objects:
        assert item["metadata"]["namespace"] == "kubeclip-jobs", item["kind"]
        assert item["metadata"]["labels"] == expected_labels, item["kind"]
        assert item["metadata"]["ownerReferences"] == [OWNER], item["kind"]


def test_remote_objects_have_no_owner() -> None:
    objects = build_workload(make_request(owner_reference=None))

    assert [item["kind"] for item in objects if "ownerReferences" in item["metadata"]] == []


def test_progress_configmap_is_empty() -> None:
    progress = _by_kind(build_workload(make_request()))[f"ConfigMap/{WORKLOAD}-progress"]

    assert progress["data"] == {}


def test_role_grants_only_progress_configmap() -> None:
    role = _by_kind(build_workload(make_request()))[f"Role/{WORKLOAD}"]

    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [f"{WORKLOAD}-progress"], "verbs": ["get", "patch", "update"]}
    ]


def test_role_binding_binds_role_to_service_account() -> None:
    objects = _by_kind(build_workload(make_request(namespace="kubeclip-jobs")))
    binding = objects[f"RoleBinding/{WORKLOAD}"]

    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKLOAD}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WORKLOAD, "namespace": "kubeclip-jobs"}]
    assert objects[f"ServiceAccount/{WORKLOAD}"]["automountServiceAccountToken"] is False


# The batch/v1 Job


def test_job_runs_one_pod_with_failure_policy() -> None:
    job = build_trainer_job(make_request(make_job(backoffLimit=5)), suspend=False)
    spec = job["spec"]

    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 5)
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2, 3]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    assert "ttlSecondsAfterFinished" not in spec
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("suspend", [True, False])
def test_job_suspend_is_explicit(suspend: bool) -> None:
    assert build_trainer_job(make_request(), suspend=suspend)["spec"]["suspend"] is suspend


@pytest.mark.parametrize("job_suspend", [True, False])
def test_workload_suspend_follows_job_spec(job_suspend: bool) -> None:
    request = make_request(make_job(suspend=job_suspend))

    assert build_workload(request)[-1]["spec"]["suspend"] is job_suspend
    assert build_workload(request, suspend=not job_suspend)[-1]["spec"]["suspend"] is not job_suspend


# The pod template


def test_pod_identity_and_lifecycle() -> None:
    pod = _pod(make_request(termination_grace_seconds=300))
    spec = pod["spec"]

    assert pod["metadata"]["labels"] == workload_labels("team-a", "flowers", JOB_UID, WORKLOAD)
    assert spec["serviceAccountName"] == WORKLOAD
    assert spec["automountServiceAccountToken"] is True
    assert spec["enableServiceLinks"] is False
    assert spec["terminationGracePeriodSeconds"] == 300


def test_container_command_image_and_port() -> None:
    request = make_request(image_pull_policy="Always", metrics_port=9500)
    pod = _pod(request)
    container = pod["spec"]["containers"][0]

    assert container["name"] == "trainer"
    assert container["image"] == TRAINER_IMAGE
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["python", "-m", "kubeclip.trainer", "--config", "/etc/kubeclip/trainer.json"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9500"}


@pytest.mark.parametrize(
    ("gpu_type", "cpu", "memory"),
    [(GpuType.H100, "16", "128Gi"), (GpuType.A100, "12", "96Gi"), (GpuType.L40, "8", "48Gi")],
)
def test_default_resources_per_gpu_type(gpu_type: GpuType, cpu: str, memory: str) -> None:
    request = make_request(make_job(infrastructure={"gpuType": gpu_type.value}))

    resources = _container(request)["resources"]

    assert default_resources(gpu_type) == TrainerResources(cpu=cpu, memory=memory, sharedMemory="8Gi")
    assert resources["requests"] == {"cpu": cpu, "memory": memory, "nvidia.com/gpu": "1"}
    assert resources["limits"] == resources["requests"]


def test_pool_resources_override_defaults() -> None:
    pool = make_pool(resources={"cpu": "30", "memory": "200Gi", "sharedMemory": "32Gi"})
    pod = _pod(make_request(pool=pool))

    resources = pod["spec"]["containers"][0]["resources"]
    shm = next(volume for volume in pod["spec"]["volumes"] if volume["name"] == "shm")

    assert resources["requests"] == {"cpu": "30", "memory": "200Gi", "nvidia.com/gpu": "1"}
    assert resources["limits"] == resources["requests"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}


def test_pool_selector_and_tolerations_with_lost_node() -> None:
    request = make_request(make_job(infrastructure={"gpuType": "L40"}), node_lost_toleration_seconds=45)

    spec = _pod(request)["spec"]

    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 45},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 45},
    ]


def test_pool_toleration_of_lost_node_wins() -> None:
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600}
    pool = make_pool(L40_POOL, tolerations=[own])
    request = make_request(make_job(infrastructure={"gpuType": "L40"}), pool=pool)

    tolerations = _pod(request)["spec"]["tolerations"]

    unreachable = [toleration for toleration in tolerations if toleration["key"] == "node.kubernetes.io/unreachable"]
    assert unreachable == [own]
    assert [toleration["key"] for toleration in tolerations] == ["node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]


def test_pod_meets_restricted_security() -> None:
    spec = _pod(make_request())["spec"]
    container = spec["containers"][0]

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (1000, 1000)
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        assert host_field not in spec, host_field
    assert [volume["name"] for volume in spec["volumes"] if "hostPath" in volume] == []


def test_volumes_and_mounts_for_s3_output() -> None:
    pod = _pod(make_request())
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["name"]: mount for mount in pod["spec"]["containers"][0]["volumeMounts"]}

    assert volumes["config"]["configMap"] == {"name": f"{WORKLOAD}-config"}
    assert volumes["home"]["emptyDir"] == {}
    assert volumes["tmp"]["emptyDir"] == {}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {name: mount["mountPath"] for name, mount in mounts.items()} == {
        "config": "/etc/kubeclip",
        "shm": "/dev/shm",
        "home": "/home/kubeclip",
        "tmp": "/tmp",
    }
    assert mounts["config"]["readOnly"] is True
    assert set(volumes) == set(mounts)


def test_pvc_output_mounts_claim() -> None:
    request = make_request(make_job(output__storageUri="pvc://training-output/runs/flowers", output__secretRef=None))

    pod = _pod(request)
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["name"]: mount for mount in pod["spec"]["containers"][0]["volumeMounts"]}

    assert volumes["output"] == {"name": "output", "persistentVolumeClaim": {"claimName": "training-output"}}
    assert mounts["output"] == {"name": "output", "mountPath": "/mnt/output"}


def test_progress_environment() -> None:
    env = {entry["name"]: entry for entry in _container(make_request())["env"]}

    assert env["HOME"]["value"] == "/home/kubeclip"
    assert env["KUBECLIP_PROGRESS_CONFIGMAP"]["value"] == f"{WORKLOAD}-progress"
    assert env["KUBECLIP_PROGRESS_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["KUBECLIP_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


# The trainer config


def test_config_round_trips_through_configmap(tmp_path: Path) -> None:
    job = make_job(training={"learningRate": "2e-5", "epochs": 4}, dataset__systemPrompt="Photo:")
    request = make_request(job, metrics_port=9500)

    config = _trainer_config(request, tmp_path)

    validate(config)
    assert config.optimization.learning_rate == 2e-5
    assert config.optimization.epochs == 4
    assert config.data.system_prompt == "Photo:"
    assert config.data.source == "s3://datasets/flowers.zip"
    assert config.data.region == "eu-west-1"
    assert config.output.location == "s3://models/flowers"
    assert config.job.namespace == "team-a"
    assert config.job.name == "flowers"
    assert config.runtime.metrics_port == 9500
    assert config.runtime.metrics_address == "0.0.0.0"
    assert config.runtime.cache_dir == "/home/kubeclip/.cache/kubeclip"
    assert config.runtime.progress_bar is False


def test_config_points_pvc_output_at_mount(tmp_path: Path) -> None:
    job = make_job(output__storageUri="pvc://training-output/runs/flowers", output__secretRef=None)

    config = _trainer_config(make_request(job), tmp_path)

    assert config.output.location == "/mnt/output/runs/flowers"


def test_config_drops_laptop_profile(tmp_path: Path) -> None:
    job = make_job(dataset__source={"uri": "s3://datasets/flowers.zip", "region": "eu-west-1", "profile": "laptop"})

    config = _trainer_config(make_request(job), tmp_path)

    assert config.data.profile is None


def test_config_holds_no_credential_reference() -> None:
    text = build_workload(make_request())[3]["data"]["trainer.json"]

    assert "aws-credentials" not in text
    assert "AWS_" not in text
    assert json.loads(text)["data"]["region"] == "eu-west-1"


# Request checks


def test_unresolved_dataset_ref_is_rejected() -> None:
    document_job = make_job(dataset={"datasetRef": {"name": "flowers-set"}})

    with pytest.raises(ValueError, match="spec.dataset.datasetRef 'flowers-set' must be resolved"):
        make_request(document_job, dataset_secret_name=None)


def test_missing_output_is_rejected() -> None:
    with pytest.raises(ValueError, match="spec.output.storageUri is required for a job that runs in a cluster"):
        make_request(make_job(output=None))


def test_local_output_is_rejected() -> None:
    with pytest.raises(ValueError, match="spec.output.storageUri 'runs/flowers' cannot be used in a cluster"):
        make_request(make_job(output__storageUri="runs/flowers", output__secretRef=None))


def test_pool_of_other_gpu_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="the GPU pool is for L40, but the job asks for spec.infrastructure.gpuType H100"):
        make_request(pool=make_pool(L40_POOL))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_pull_policy": "Sometimes"}, "image pull policy 'Sometimes' is invalid"),
        ({"metrics_port": 0}, "metrics port 0 is invalid"),
        ({"termination_grace_seconds": -1}, "termination_grace_seconds must be 0 or more"),
    ],
)
def test_invalid_pod_settings_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_request(**changes)


# Secret copies


def test_secret_copy_keeps_data_and_type_only() -> None:
    source = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "aws-credentials",
            "namespace": "team-a",
            "uid": "abc",
            "resourceVersion": "17",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "ownerReferences": [OWNER],
            "labels": {"team": "a"},
        },
        "type": "Opaque",
        "data": {"AWS_ACCESS_KEY_ID": "QUtJQQ==", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"},
        "immutable": True,
    }
    labels = workload_labels("team-a", "flowers", JOB_UID, WORKLOAD)

    copy = build_secret_copy(source, name=f"{WORKLOAD}-dataset", namespace="kubeclip-jobs", labels=labels)

    assert copy == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{WORKLOAD}-dataset", "namespace": "kubeclip-jobs", "labels": labels},
        "type": "Opaque",
        "data": {"AWS_ACCESS_KEY_ID": "QUtJQQ==", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"},
    }
    assert copy["data"] is not source["data"]


def test_secret_copy_of_empty_secret() -> None:
    copy = build_secret_copy({"metadata": {"name": "empty"}}, name="w-output", namespace="ns", labels={})

    assert (copy["type"], copy["data"]) == ("Opaque", {})


def test_secret_copy_rejects_service_account_token() -> None:
    source = {"metadata": {"name": "builder-token"}, "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}}

    with pytest.raises(ValueError, match="Secret 'builder-token' has type kubernetes.io/service-account-token.*type Opaque"):
        build_secret_copy(source, name="w-dataset", namespace="ns", labels={})

