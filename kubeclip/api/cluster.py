"""The ``ClipCluster`` resource: a place where trainers run and the GPU pools it offers.

A ClipCluster is cluster-scoped, because one platform team registers it for every
namespace. Jobs name it in ``spec.infrastructure.clusterRef``; a Managed job without a
clusterRef runs on the operator's default Managed cluster (``kubeclip operator
--default-cluster``, ``managed`` unless changed).

- Managed: the cluster the operator runs in, with the node pools the platform set up.
- Standalone: a cluster where kubeclip is installed on its own; to its operator it is
  local like a Managed one, so it needs no kubeconfig either.
- BringYourOwn: a remote cluster reached through a kubeconfig stored in a Secret of the
  operator's cluster; trainers run in ``spec.namespace`` there.

Each GPU pool maps one GPU type to the node labels and taints that real clusters use.
GPU Feature Discovery labels nodes ``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3``, GKE
``cloud.google.com/gke-accelerator=nvidia-h100-80gb``, EKS with Karpenter
``karpenter.k8s.aws/instance-gpu-name=h100``. The operator matches labels exactly, so a
pool whose selector names ``NVIDIA-L40`` never schedules on an ``NVIDIA-L40S`` node.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kubeclip.api.job import CEL_RULES_KEY, GpuType, InfrastructureType, ObjectMeta, cel_rule
from kubeclip.api.status import Condition

CLUSTER_KIND = "ClipCluster"
#: Key of the kubeconfig in the Secret named by kubeconfigSecretRef, unless the ref names another.
DEFAULT_KUBECONFIG_KEY = "kubeconfig"
#: Kubernetes resource quantity, such as 8, 500m, 64Gi or 1.5G.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TolerationOperator(str, enum.Enum):
    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(str, enum.Enum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(_ApiModel):
    """A toleration copied onto the trainer pod, as in a PodSpec."""

    key: str | None = Field(None, description="Taint key the toleration matches; empty with operator Exists matches every taint.")
    operator: TolerationOperator = Field(TolerationOperator.EQUAL, description="Equal (key and value match) or Exists (the key is present).")
    value: str | None = Field(None, description="Taint value the toleration matches, for operator Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; empty matches all.")
    toleration_seconds: int | None = Field(
        None, alias="tolerationSeconds", ge=0, description="For NoExecute taints: seconds the pod stays bound after the taint appears."
    )

    def to_pod_toleration(self) -> dict[str, object]:
        """Return the toleration as a PodSpec spells it, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class TrainerResources(_ApiModel):
    """CPU, memory and shared memory of the trainer pod on a pool's nodes."""

    cpu: str = Field(pattern=QUANTITY_PATTERN, description="CPU request and limit, e.g. 8.")
    memory: str = Field(pattern=QUANTITY_PATTERN, description="Memory request and limit, e.g. 64Gi.")
    shared_memory: str = Field(
        "8Gi",
        alias="sharedMemory",
        pattern=QUANTITY_PATTERN,
        description="Size of the in-memory /dev/shm that data loader workers pass batches through.",
    )


class GpuPool(_ApiModel):
    """The nodes of one GPU type and how the trainer pod selects them."""

    gpu_type: GpuType = Field(alias="gpuType", description="GPU type jobs ask for in spec.infrastructure.gpuType: H100, A100 or L40.")
    node_selector: dict[str, str] = Field(
        alias="nodeSelector",
        min_length=1,
        description="Node labels that all of the pool's nodes carry and no other node does, matched exactly. "
        "For example nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3 (GPU Feature Discovery), "
        "cloud.google.com/gke-accelerator: nvidia-a100-80gb (GKE) or karpenter.k8s.aws/instance-gpu-name: l40 (EKS).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for the pool's taints, such as nvidia.com/gpu=present:NoSchedule."
    )
    capacity: int | None = Field(
        None,
        ge=1,
        description="Maximum number of trainers that run on the pool at once; further jobs wait in phase Pending with reason "
        "WaitingForCapacity. Unset: no limit other than the scheduler's.",
    )
    resources: TrainerResources | None = Field(
        None, description="Trainer pod size on these nodes. Unset: the operator's default for the GPU type."
    )

    @field_validator("node_selector")
    @classmethod
    def _check_label_values(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for key, label in value.items():
            if not re.match(_LABEL_VALUE_PATTERN, label) or len(label) > 63:
                raise ValueError(f"nodeSelector value {label!r} of {key!r} is not a valid label value; copy it from kubectl get nodes --show-labels")
        return value


class SecretKeyReference(_ApiModel):
    """A key of a Secret in a given namespace of the operator's cluster."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    namespace: str = Field(min_length=1, description="Namespace of the Secret, usually the operator's own.")
    key: str = Field(DEFAULT_KUBECONFIG_KEY, min_length=1, description="Key of the Secret that contains the kubeconfig.")


class ClipClusterSpec(_ApiModel):
    """A cluster where trainers run, and its GPU pools."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule(
                    "self.type == 'BringYourOwn' ? has(self.kubeconfigSecretRef) : !has(self.kubeconfigSecretRef)",
                    "a BringYourOwn cluster needs spec.kubeconfigSecretRef, and Managed or Standalone clusters must not set it "
                    "(the operator reaches them in-cluster)",
                    field_path=".kubeconfigSecretRef",
                ),
            ]
        }
    )

    type: InfrastructureType = Field(
        InfrastructureType.MANAGED, description="Managed (the operator's own cluster), BringYourOwn (a remote cluster) or Standalone."
    )
    description: str | None = Field(None, description="What the cluster is, for people choosing one.")
    kubeconfig_secret_ref: SecretKeyReference | None = Field(
        None,
        alias="kubeconfigSecretRef",
        description="For BringYourOwn: Secret holding a kubeconfig for the remote cluster. Tokens and exec plugins "
        "are refreshed when they expire or the Secret changes.",
    )
    namespace: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="Namespace the trainers run in. Unset: the job's own namespace for Managed and Standalone clusters, "
        "kubeclip-jobs for BringYourOwn.",
    )
    gpu_pools: list[GpuPool] = Field(
        alias="gpuPools",
        min_length=1,
        description="GPU types the cluster offers, one pool per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["gpuType"]},
    )

    @model_validator(mode="after")
    def _check_cluster(self) -> ClipClusterSpec:
        if (self.type == InfrastructureType.BRING_YOUR_OWN) != (self.kubeconfig_secret_ref is not None):
            raise ValueError(
                "a BringYourOwn cluster needs spec.kubeconfigSecretRef, and Managed or Standalone clusters must not set it"
            )
        types = [pool.gpu_type for pool in self.gpu_pools]
        duplicates = sorted({gpu.value for gpu in types if types.count(gpu) > 1})
        if duplicates:
            raise ValueError(f"spec.gpuPools lists GPU type {', '.join(duplicates)} more than once; keep one pool per GPU type")
        return self

    def pool(self, gpu_type: GpuType) -> GpuPool | None:
        """Return the pool of ``gpu_type``, or None when the cluster does not offer it."""
        return next((pool for pool in self.gpu_pools if pool.gpu_type == gpu_type), None)


class ClipClusterStatus(BaseModel):
    """The operator's latest observation of the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Reachable: whether the operator could reach the cluster's API server with its credentials.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, alias="observedGeneration", ge=0, description="metadata.generation the status describes.")
    server_version: str | None = Field(None, alias="serverVersion", description="Kubernetes version of the cluster's API server.")
    last_probe_time: datetime | None = Field(None, alias="lastProbeTime", description="When the operator last reached the cluster.")


class ClusterMeta(BaseModel):
    """Metadata of a cluster-scoped object: a name and nothing else required."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253)


class ClipCluster(BaseModel):
    """A ClipCluster manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["kubeclip.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ClipCluster"]
    metadata: ClusterMeta
    spec: ClipClusterSpec
    status: dict | None = None


__all__ = [
    "CLUSTER_KIND",
    "ClipCluster",
    "ClipClusterSpec",
    "ClipClusterStatus",
    "GpuPool",
    "ObjectMeta",
    "SecretKeyReference",
    "Toleration",
    "TrainerResources",
]
