"""Everything the workload builders need to know about one job and the place it runs.

``kubeclip.builders.workload`` re-exports ``WorkloadRequest``; it lives here so that the
pod and RBAC builders can take it without importing the module that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from kubeclip.api.cluster import GpuPool
from kubeclip.api.job import ClipTrainingJob
from kubeclip.api.recommendations import ResolvedSettings
from kubeclip.builders.locations import ACCEPTED_OUTPUT_FORMS, trainer_output
from kubeclip.builders.naming import workload_labels, workload_name

IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class WorkloadRequest:
    """One job to run, the target namespace and pool, and the operator's settings for the pod.

    Raises:
        ValueError: on construction, when the dataset is not resolved to a source, the
            output location is missing or cannot be reached from a pod, the pool is for
            another GPU type than the job requests, or a setting is out of range.
    """

    #: A validated job whose ``spec.dataset.source`` is set; the operator resolves a
    #: ``datasetRef`` into it first.
    job: ClipTrainingJob
    #: ``metadata.uid`` of the ClipTrainingJob, which the ``kubeclip.dev/job-uid`` label carries.
    job_uid: str
    #: ``kubeclip.api.recommendations.resolve_settings(job)``.
    settings: ResolvedSettings
    #: Namespace of the target cluster where every object is created.
    namespace: str
    #: The pool of the job's GPU type in the target ClipCluster.
    pool: GpuPool
    trainer_image: str
    image_pull_policy: str = "IfNotPresent"
    #: Owner reference to the ClipTrainingJob when the target is the operator's own
    #: cluster; None in a BringYourOwn cluster, where the cleanup finalizer deletes instead.
    owner_reference: dict[str, Any] | None = None
    #: Secret with the dataset's credentials in the target namespace: the job's own, or
    #: its copy in a BringYourOwn cluster. None gives the pod no dataset credentials.
    dataset_secret_name: str | None = None
    #: Secret with the output's credentials in the target namespace, as for the dataset.
    output_secret_name: str | None = None
    #: Port of the trainer's Prometheus endpoint.
    metrics_port: int = 9400
    #: Seconds between SIGTERM and SIGKILL, in which the trainer writes a checkpoint.
    termination_grace_seconds: int = 120
    #: Seconds the pod stays on a not-ready or unreachable node before it is evicted.
    node_lost_toleration_seconds: int = 60

    def __post_init__(self) -> None:
        spec = self.job.spec
        if spec.dataset.source is None:
            reference = spec.dataset.dataset_ref.name if spec.dataset.dataset_ref else None
            raise ValueError(f"spec.dataset.datasetRef {reference!r} must be resolved into spec.dataset.source before building the workload")
        if spec.output.storage_uri is None:
            raise ValueError(f"spec.output.storageUri is required for a job that runs in a cluster; set it to {ACCEPTED_OUTPUT_FORMS}")
        trainer_output(spec.output.storage_uri)
        if self.pool.gpu_type != spec.infrastructure.gpu_type:
            raise ValueError(
                f"the GPU pool is for {self.pool.gpu_type.value}, but the job asks for spec.infrastructure.gpuType "
                f"{spec.infrastructure.gpu_type.value}; pass the target cluster's pool of that GPU type"
            )
        if self.image_pull_policy not in IMAGE_PULL_POLICIES:
            raise ValueError(f"image pull policy {self.image_pull_policy!r} is invalid; use one of {', '.join(IMAGE_PULL_POLICIES)}")
        if not 1 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port {self.metrics_port} is invalid; use a port between 1 and 65535")
        for name in ("termination_grace_seconds", "node_lost_toleration_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")

    @cached_property
    def workload(self) -> str:
        """Name of the ServiceAccount, Role, RoleBinding and Job, and prefix of the ConfigMaps."""
        return workload_name(self.job.metadata.namespace, self.job.metadata.name)

    @property
    def output_uri(self) -> str:
        """``spec.output.storageUri``, which construction checked to be set and reachable from a pod."""
        assert self.job.spec.output.storage_uri is not None
        return self.job.spec.output.storage_uri

    @property
    def output_location(self) -> str:
        """The output location as the trainer in the pod sees it: the storage URI, or a path under the claim's mount."""
        return trainer_output(self.output_uri)[0]

    @cached_property
    def labels(self) -> dict[str, str]:
        """Labels of every object of the workload, the pod included."""
        metadata = self.job.metadata
        return workload_labels(metadata.namespace, metadata.name, self.job_uid, self.workload)

    def object_metadata(self, name: str) -> dict[str, Any]:
        """Return the metadata of one object of the workload: name, namespace, labels and the owner reference."""
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": dict(self.labels)}
        if self.owner_reference is not None:
            metadata["ownerReferences"] = [dict(self.owner_reference)]
        return metadata
