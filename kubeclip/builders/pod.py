"""The trainer pod template: container, resources, volumes, placement and security.

The template passes the Pod Security ``restricted`` level, so the trainer runs in
namespaces that enforce it.
"""

from __future__ import annotations

from typing import Any

from kubeclip.api.cluster import GpuPool, TrainerResources
from kubeclip.api.job import GpuType
from kubeclip.builders.credentials import CredentialSource, build_store_credentials
from kubeclip.builders.locations import OUTPUT_MOUNT_PATH, trainer_output
from kubeclip.builders.naming import config_configmap_name, progress_configmap_name
from kubeclip.builders.request import WorkloadRequest

TRAINER_CONTAINER = "trainer"
CONFIG_MOUNT_PATH = "/etc/kubeclip"
#: Key of the trainer config in the config ConfigMap, and its file name under CONFIG_MOUNT_PATH.
TRAINER_CONFIG_KEY = "trainer.json"
TRAINER_COMMAND = ["python", "-m", "kubeclip.trainer", "--config", f"{CONFIG_MOUNT_PATH}/{TRAINER_CONFIG_KEY}"]
#: HOME of the trainer, an emptyDir because the root filesystem is read-only.
HOME_PATH = "/home/kubeclip"
#: Cache of downloaded datasets and models, inside HOME_PATH.
CACHE_PATH = f"{HOME_PATH}/.cache/kubeclip"
METRICS_PORT_NAME = "metrics"
GPU_RESOURCE = "nvidia.com/gpu"
#: UID and GID of the trainer process; any non-zero ID passes the restricted level.
TRAINER_USER_ID = 1000
#: Node taints that the node lifecycle controller sets on a node that stops reporting.
LOST_NODE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")

# CPU and memory per GPU type when the pool sets no resources. A pool whose nodes
# cannot fit one trainer of this size per GPU sets its own resources.
_DEFAULT_RESOURCES = {
    GpuType.H100: TrainerResources(cpu="16", memory="128Gi", shared_memory="8Gi"),
    GpuType.A100: TrainerResources(cpu="12", memory="96Gi", shared_memory="8Gi"),
    GpuType.L40: TrainerResources(cpu="8", memory="48Gi", shared_memory="8Gi"),
}


def default_resources(gpu_type: GpuType) -> TrainerResources:
    """Return the trainer's CPU, memory and shared memory on a node of ``gpu_type`` when its pool sets none."""
    return _DEFAULT_RESOURCES[gpu_type]


def build_pod_template(request: WorkloadRequest) -> dict[str, Any]:
    """Build the pod template of the trainer Job."""
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(request.metrics_port)}
    credentials = build_store_credentials(_credential_sources(request))
    volumes, mounts = _volumes_and_mounts(request)
    spec = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": request.termination_grace_seconds,
        "serviceAccountName": request.workload,
        "automountServiceAccountToken": True,
        # The trainer reaches no Service, so a variable for every Service in the namespace would only crowd its environment.
        "enableServiceLinks": False,
        "nodeSelector": dict(request.pool.node_selector),
        "tolerations": build_tolerations(request.pool, request.node_lost_toleration_seconds),
        "securityContext": _pod_security_context(),
        "containers": [_trainer_container(request, credentials.env, mounts + credentials.volume_mounts)],
        "volumes": volumes + credentials.volumes,
    }
    return {"metadata": {"labels": dict(request.labels), "annotations": annotations}, "spec": spec}


def build_tolerations(pool: GpuPool, node_lost_seconds: int) -> list[dict[str, Any]]:
    """Return the pool's tolerations plus short NoExecute tolerations for a lost node.

    Without them, the DefaultTolerationSeconds admission plugin adds 300 seconds, so a
    trainer on a dead node would wait five minutes before its retry starts. A pool that
    already tolerates one of those taints keeps its own toleration.
    """
    tolerations = [toleration.to_pod_toleration() for toleration in pool.tolerations]
    tolerated = {toleration.get("key") for toleration in tolerations if toleration.get("effect") in (None, "NoExecute")}
    for taint in LOST_NODE_TAINTS:
        if taint not in tolerated:
            tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": node_lost_seconds})
    return tolerations


def build_resources(pool: GpuPool) -> dict[str, dict[str, str]]:
    """Return the container resources: requests equal to limits, so the pod gets the Guaranteed QoS class."""
    sizes = pool.resources or default_resources(pool.gpu_type)
    quantities = {"cpu": sizes.cpu, "memory": sizes.memory, GPU_RESOURCE: "1"}
    return {"requests": dict(quantities), "limits": dict(quantities)}


def _trainer_container(request: WorkloadRequest, credential_env: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": TRAINER_CONTAINER,
        "image": request.trainer_image,
        "imagePullPolicy": request.image_pull_policy,
        "command": list(TRAINER_COMMAND),
        "env": _base_environment(request) + credential_env,
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": request.metrics_port, "protocol": "TCP"}],
        "resources": build_resources(request.pool),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # A trainer that dies before it writes a message still leaves its last log lines in the pod status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _base_environment(request: WorkloadRequest) -> list[dict[str, Any]]:
    return [
        {"name": "HOME", "value": HOME_PATH},
        # The same values as in trainer.json, as variables, so paths under mounts can be moved (see kubeclip.trainer.__main__).
        {"name": "KUBECLIP_OUTPUT_LOCATION", "value": request.output_location},
        {"name": "KUBECLIP_CACHE_DIR", "value": CACHE_PATH},
        {"name": "KUBECLIP_PROGRESS_CONFIGMAP", "value": progress_configmap_name(request.workload)},
        {"name": "KUBECLIP_PROGRESS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBECLIP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def _credential_sources(request: WorkloadRequest) -> list[CredentialSource]:
    spec = request.job.spec
    source = spec.dataset.source
    assert source is not None  # checked by WorkloadRequest
    dataset = CredentialSource(
        "spec.dataset.source.secretRef", source.uri, source.secret_ref.name if source.secret_ref else None, request.dataset_secret_name
    )
    output_ref = spec.output.secret_ref.name if spec.output.secret_ref else None
    output = CredentialSource("spec.output.secretRef", request.output_uri, output_ref, request.output_secret_name)
    return [dataset, output]


def _volumes_and_mounts(request: WorkloadRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sizes = request.pool.resources or default_resources(request.pool.gpu_type)
    volumes = [
        {"name": "config", "configMap": {"name": config_configmap_name(request.workload)}},
        # Data loader workers pass batches through /dev/shm; its pages count against the memory limit.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": sizes.shared_memory}},
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "home", "mountPath": HOME_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    _, claim, _ = trainer_output(request.output_uri)
    if claim is not None:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "output", "mountPath": OUTPUT_MOUNT_PATH})
    return volumes, mounts


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_USER_ID,
        "runAsGroup": TRAINER_USER_ID,
        # The group owns the output claim's files and the credentials file.
        "fsGroup": TRAINER_USER_ID,
        # A claim full of checkpoints is chowned only when its root has another owner, not on every start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
