"""Simulated GPU node pools and the kwok Stage configuration of a development cluster.

``kubeclip.dev.cluster`` creates the Node objects from ``build_nodes`` through the API
and starts kwok with the file from ``write_stage_config``. kwok then acts as the kubelet
of every Node annotated ``kwok.x-k8s.io/node: fake``: it marks them Ready, renews their
leases, and moves their pods through the Stages below.

Pod lifecycle under these Stages: a scheduled pod becomes Running with Ready
conditions and stays Running. A test decides the outcome by labelling the pod
``kubeclip.dev/pod-outcome=Succeeded`` or ``=Failed``, for example with ``set_pod_outcome``
in ``kubeclip.dev.cluster``. kwok then terminates its containers with exit code 0, or
for Failed with the code in the pod's ``kubeclip.dev/pod-exit-code`` annotation (1 without
it). The annotation must be set no later than the label, since kwok reads it when the
label selects the pod.
kwok's stock ``pod-complete`` Stage, which finishes every Job pod at once, is left out.
A pod with a deletion timestamp first gets phase Failed with exit code 143, as a kubelet
reports a container it stopped, and is then deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Annotation that kwok's ``--manage-nodes-with-annotation-selector`` selects.
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Label a test sets on a Running pod to choose its terminal phase: "Succeeded" or "Failed".
POD_OUTCOME_LABEL = "kubeclip.dev/pod-outcome"
#: Label naming the simulated pool of a node.
POOL_LABEL = "kubeclip.dev/pool"
#: Extended resource of the NVIDIA device plugin.
GPU_RESOURCE = "nvidia.com/gpu"
#: Taint that GPU node pools carry in GKE, EKS and AKS, so only pods that tolerate it land there.
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
#: Annotation holding the exit code (a decimal integer) of the containers of a pod labelled Failed.
POD_EXIT_CODE_ANNOTATION = "kubeclip.dev/pod-exit-code"
#: Exit code of the containers of a pod labelled Failed without that annotation.
FAILED_EXIT_CODE = 1
#: Exit code of the containers of a pod deleted while it ran: 128 + SIGTERM, as a container stopped by its kubelet.
STOPPED_EXIT_CODE = 143
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodePool:
    """A group of identical simulated nodes.

    GPU labels follow NVIDIA GPU Feature Discovery (``nvidia.com/gpu.product`` with the
    product name as the driver reports it, spaces as dashes; ``gpu.count``; ``gpu.memory``
    in MiB; ``gpu.family``).
    """

    name: str
    node_count: int
    cpu: str
    memory: str
    gpu_product: str | None = None
    gpu_count: int = 0
    gpu_memory_mib: int = 0
    gpu_family: str = ""
    extra_labels: dict[str, str] = field(default_factory=dict)


NODE_POOLS: tuple[NodePool, ...] = (
    NodePool("h100", 2, "208", "1843Gi", "NVIDIA-H100-80GB-HBM3", 8, 81559, "hopper"),
    # The A100 pool also carries GKE's accelerator label, the scheme a GKE cluster without GPU Feature Discovery has.
    NodePool(
        "a100", 1, "96", "1360Gi", "NVIDIA-A100-SXM4-80GB", 8, 81920, "ampere",
        {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb", "cloud.google.com/gke-nodepool": "a100"},
    ),  # fmt: skip
    NodePool("l40", 1, "48", "384Gi", "NVIDIA-L40", 4, 46068, "ada-lovelace"),
    # L40S differs from L40 only by the suffix, so a test can prove that selection matches the whole product string.
    NodePool("l40s", 1, "48", "384Gi", "NVIDIA-L40S", 4, 46068, "ada-lovelace"),
    NodePool("cpu", 1, "32", "128Gi"),
)


def node_name(pool: NodePool, index: int) -> str:
    """Return the name of node ``index`` of ``pool``, such as ``kwok-h100-0``."""
    return f"kwok-{pool.name}-{index}"


def build_nodes(pools: tuple[NodePool, ...] = NODE_POOLS) -> list[dict[str, Any]]:
    """Return the Node manifests of every pool, status included, for creation through the API."""
    return [build_node(pool, index) for pool in pools for index in range(pool.node_count)]


def build_node(pool: NodePool, index: int) -> dict[str, Any]:
    """Return the Node manifest of node ``index`` of ``pool``, with capacity and allocatable in its status."""
    name = node_name(pool, index)
    resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", "ephemeral-storage": "1Ti"}
    spec: dict[str, Any] = {}
    if pool.gpu_product:
        resources[GPU_RESOURCE] = str(pool.gpu_count)
        spec["taints"] = [dict(GPU_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": _node_labels(pool, name),
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def build_stages() -> list[dict[str, Any]]:
    """Return the kwok Stage objects: node initialize and heartbeat, pod ready, the two outcomes, pod stop and delete."""
    return [
        _stage("Node", "node-initialize", [_expression('.status.conditions.[] | select( .type == "Ready" ) | .status', "NotIn", ["True"])], _NODE_STATUS_TEMPLATE),
        _stage("Node", "node-heartbeat", [_expression(".status.phase", "In", ["Running"])], _NODE_HEARTBEAT_TEMPLATE, delay_ms=20_000, jitter_ms=25_000),
        _stage("Pod", "pod-ready", [*_live_pod_in_phase("Pending"), _expression('.status.conditions.[] | select( .type == "Ready" ) | .status', "NotIn", ["True"])], _POD_RUNNING_TEMPLATE),
        _outcome_stage("Succeeded", exit_code_yaml="      exitCode: 0", reason="Completed"),
        _outcome_stage("Failed", exit_code_yaml=_ANNOTATED_EXIT_CODE_TEMPLATE, reason="Error"),
        _stop_on_delete_stage(),
        _stage("Pod", "pod-delete", [_expression(".metadata.deletionTimestamp", "Exists"), _expression(".status.phase", "In", list(TERMINAL_PHASES))], None, delete=True),
    ]


def write_stage_config(path: Path) -> Path:
    """Write the Stages of ``build_stages`` as one multi-document YAML file for ``kwok --config``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(build_stages(), sort_keys=False))
    return path


def _node_labels(pool: NodePool, name: str) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    if pool.gpu_product:
        labels.update({
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool.gpu_product,
            "nvidia.com/gpu.count": str(pool.gpu_count),
            "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
            "nvidia.com/gpu.family": pool.gpu_family,
        })  # fmt: skip
    labels.update(pool.extra_labels)
    return labels


def _outcome_stage(phase: str, *, exit_code_yaml: str, reason: str) -> dict[str, Any]:
    template = _POD_TERMINATED_TEMPLATE.replace("@EXIT_CODE@", exit_code_yaml).replace("@REASON@", reason).replace("@PHASE@", phase)
    stage = _stage("Pod", f"pod-{phase.lower()}", _live_pod_in_phase("Running"), template)
    stage["spec"]["selector"]["matchLabels"] = {POD_OUTCOME_LABEL: phase}
    return stage


def _stop_on_delete_stage() -> dict[str, Any]:
    # A kubelet stops the containers of a deleted pod and reports a terminal phase before
    # the object goes away; the Job controller keeps its job-tracking finalizer on the pod
    # until it sees that phase, so without this Stage a deleted Job pod never disappears.
    template = _POD_TERMINATED_TEMPLATE.replace("@EXIT_CODE@", f"      exitCode: {STOPPED_EXIT_CODE}").replace("@REASON@", "Error").replace("@PHASE@", "Failed")
    expressions = [_expression(".metadata.deletionTimestamp", "Exists"), _expression(".status.phase", "In", ["Pending", "Running"])]
    return _stage("Pod", "pod-stop-on-delete", expressions, template)


def _live_pod_in_phase(phase: str) -> list[dict[str, Any]]:
    return [_expression(".metadata.deletionTimestamp", "DoesNotExist"), _expression(".status.phase", "In", [phase])]


def _expression(key: str, operator: str, values: list[str] | None = None) -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if values is not None:
        expression["values"] = values
    return expression


def _stage(
    kind: str,
    name: str,
    expressions: list[dict[str, Any]],
    status_template: str | None,
    *,
    delete: bool = False,
    delay_ms: int = 0,
    jitter_ms: int = 0,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"resourceRef": {"apiGroup": "v1", "kind": kind}, "selector": {"matchExpressions": expressions}}
    if delay_ms:
        spec["delay"] = {"durationMilliseconds": delay_ms, "jitterDurationMilliseconds": jitter_ms}
    spec["next"] = {"delete": True} if delete else {"statusTemplate": status_template}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


# kwok renders these Go templates against the object. NodeConditions, NodeIP,
# PodIPsWith, NodeIPsWith, Now, Quote and YAML are kwok's template functions.
_NODE_CONDITIONS_TEMPLATE = """{{ $now := Now }}
{{ $since := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $since | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
"""

# Capacity and allocatable are copied from the Node as created, so GPU counts survive.
_NODE_STATUS_TEMPLATE = _NODE_CONDITIONS_TEMPLATE + """addresses:
{{ with NodeIP }}
- address: {{ . | Quote }}
  type: InternalIP
{{ end }}
- address: {{ .metadata.name | Quote }}
  type: Hostname
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  bootID: ""
  machineID: ""
  osImage: ""
  systemUUID: ""
phase: Running
"""

_NODE_HEARTBEAT_TEMPLATE = _NODE_CONDITIONS_TEMPLATE

_POD_RUNNING_TEMPLATE = """{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
{{ end }}
{{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

# The exit code line of the Failed Stage. kwok's templates include the sprig functions
# (kwok's pkg/utils/gotpl; tests/devcluster/test_pod_runner.py runs this with kwok v0.8.0).
# ``dig`` returns "" when the pod has no annotations at all, where ``index`` would fail.
# ``$`` is the pod, because ``.`` is the container inside ``range``.
_ANNOTATED_EXIT_CODE_TEMPLATE = """{{ with dig "metadata" "annotations" "@ANNOTATION@" "" $ }}
      exitCode: {{ atoi . }}
{{ else }}
      exitCode: @DEFAULT@
{{ end }}""".replace("@ANNOTATION@", POD_EXIT_CODE_ANNOTATION).replace("@DEFAULT@", str(FAILED_EXIT_CODE))

_POD_TERMINATED_TEMPLATE = """{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: Ready
  reason: PodCompleted
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: ContainersReady
  reason: PodCompleted
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
@EXIT_CODE@
      reason: @REASON@
      finishedAt: {{ $now | Quote }}
      startedAt: {{ $now | Quote }}
{{ end }}
phase: @PHASE@
"""
