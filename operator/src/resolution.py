"""Resolve a ClipTrainingJob into everything needed to run it: settings, dataset, cluster and GPU pool.

Each lookup that fails raises ``Problem`` with the reason and the fix. Problems the user
fixes by editing the job fail it at once; missing references and Secrets leave it
waiting, because creating the ClipDataset, ClipCluster or Secret later is the usual fix.
"""

from __future__ import annotations

import json
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.cluster import ClipClusterSpec, GpuPool
from kubeclip.api.job import API_GROUP, ClipDatasetSpec, ClipTrainingJob, InfrastructureType
from kubeclip.api.loading import format_validation_error
from kubeclip.api.recommendations import ResolvedSettings, resolve_settings
from kubeclip.api.status import ConditionReason
from kubeclip.builders.locations import trainer_output
from kubeclip.builders.naming import workload_name
from kubeclip.operator.clusters import DEFAULT_REMOTE_NAMESPACE
from kubeclip.operator.problems import Problem

VERSION = "v1alpha1"
#: Seconds a found ClipCluster, ClipDataset or Secret is remembered. Only found objects are
#: remembered, so a job that waits for a missing one sees it on its next pass.
LOOKUP_TTL_SECONDS = 15.0
_OUTPUT_FORMS = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or pvc://CLAIM/PATH"


class Lookups:
    """Cache of objects that were found, kept for ``ttl`` seconds so each pass of each job does not read them again.

    A ``load`` that raises stores nothing, so a missing object is looked up again on the next call.
    """

    def __init__(self, ttl: float = LOOKUP_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        """Return the value cached under ``key``, or call ``load`` and cache what it returns."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        with self._lock:
            # Expired entries are dropped here, so objects that jobs stopped naming do not pile up.
            self._entries = {cached: item for cached, item in self._entries.items() if item[0] > now}
            self._entries[key] = (now + self._ttl, value)
        return value


@dataclass(frozen=True)
class ResolvedJob:
    """A job with its references looked up, ready for the builders."""

    job: ClipTrainingJob
    uid: str
    generation: int
    created: str
    settings: ResolvedSettings
    cluster_name: str
    cluster: ClipClusterSpec
    pool: GpuPool
    #: Namespace of the trainer objects in the target cluster.
    namespace: str
    workload: str

    @property
    def is_remote(self) -> bool:
        return self.cluster.type == InfrastructureType.BRING_YOUR_OWN

    @property
    def gpu_type(self) -> str:
        return self.pool.gpu_type.value


def parse_body(body: dict[str, Any]) -> ClipTrainingJob:
    """Validate the object as the API types define it; the API server has already applied defaults and CEL rules."""
    metadata = body.get("metadata", {})
    manifest = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace", "default")},
        "spec": body.get("spec", {}),
    }
    try:
        return ClipTrainingJob.model_validate(manifest)
    except pydantic.ValidationError as error:
        raise Problem(ConditionReason.INVALID_SPEC, format_validation_error(error), retry=False) from None


def resolve(body: dict[str, Any], api_client: client.ApiClient, default_cluster: str, lookups: Lookups | None = None) -> ResolvedJob:
    """Look up the job's cluster and GPU pool and resolve its settings.

    The dataset and the Secrets matter only when the trainer is created, so
    ``resolve_references`` checks them then: a running trainer is not disturbed when
    a ClipDataset or Secret it was started from is deleted.

    Raises:
        Problem: a setting is invalid, or a referenced object does not exist.
        ApiException: the home API server failed to return an object for another reason than 404.
    """
    lookups = lookups or Lookups(ttl=0.0)
    job = parse_body(body)
    _check_output(job)
    metadata = body["metadata"]
    cluster_name, cluster = _cluster_of(job, api_client, default_cluster, lookups)
    pool = _pool_of(job, cluster_name, cluster)
    try:
        settings = resolve_settings(job)
    except ValueError as error:
        raise Problem(ConditionReason.INVALID_SPEC, str(error), retry=False) from None
    return ResolvedJob(
        job=job,
        uid=metadata["uid"],
        generation=int(metadata.get("generation", 1)),
        created=metadata.get("creationTimestamp", ""),
        settings=settings,
        cluster_name=cluster_name,
        cluster=cluster,
        pool=pool,
        namespace=_target_namespace(job, cluster),
        workload=workload_name(job.metadata.namespace, job.metadata.name),
    )


def resolve_references(resolved: ResolvedJob, api_client: client.ApiClient, lookups: Lookups) -> ResolvedJob:
    """Return ``resolved`` with a ``datasetRef`` replaced by the ClipDataset's source, after checking that its Secrets exist.

    Raises:
        Problem: the ClipDataset or a Secret does not exist, or the ClipDataset is invalid.
    """
    job = _with_dataset_source(resolved.job, api_client, lookups)
    _check_secrets(job, api_client, lookups)
    return dataclasses.replace(resolved, job=job)


@dataclass(frozen=True)
class Placement:
    """The location of a job's trainer objects: the cluster, the namespace in it and the workload name."""

    uid: str
    cluster_name: str
    cluster: ClipClusterSpec
    #: Namespace of the trainer objects in the target cluster.
    namespace: str
    workload: str

    @property
    def is_remote(self) -> bool:
        return self.cluster.type == InfrastructureType.BRING_YOUR_OWN


def resolve_placement(body: dict[str, Any], api_client: client.ApiClient, default_cluster: str) -> Placement:
    """Look up only the cluster of a job, for deleting its trainer objects.

    Unlike ``resolve``, this does not need the job's ClipDataset or Secrets, so the trainer
    objects of a job are found and deleted even when those were deleted first.

    Raises:
        Problem: the job's spec is invalid or its ClipCluster does not exist.
        ApiException: the home API server failed to return the ClipCluster for another reason than 404.
    """
    job = parse_body(body)
    cluster_name, cluster = _cluster_of(job, api_client, default_cluster, Lookups(ttl=0.0))
    return Placement(
        uid=body["metadata"]["uid"],
        cluster_name=cluster_name,
        cluster=cluster,
        namespace=_target_namespace(job, cluster),
        workload=workload_name(job.metadata.namespace, job.metadata.name),
    )


def _with_dataset_source(job: ClipTrainingJob, api_client: client.ApiClient, lookups: Lookups) -> ClipTrainingJob:
    reference = job.spec.dataset.dataset_ref
    if reference is None:
        return job
    namespace = job.metadata.namespace
    try:
        body = lookups.get(
            ("clipdatasets", namespace, reference.name),
            lambda: client.CustomObjectsApi(api_client).get_namespaced_custom_object(API_GROUP, VERSION, namespace, "clipdatasets", reference.name),
        )
    except ApiException as error:
        if error.status == 404:
            raise Problem(
                ConditionReason.DATASET_NOT_FOUND,
                f"spec.dataset.datasetRef names ClipDataset {reference.name!r}, which does not exist in namespace {namespace}; "
                f"create it (kubectl get clipdatasets -n {namespace} lists the registered ones) or fix the name",
                retry=True,
            ) from None
        raise
    try:
        dataset = ClipDatasetSpec.model_validate(body.get("spec", {}))
    except pydantic.ValidationError as error:
        raise Problem(ConditionReason.INVALID_SPEC, f"ClipDataset {reference.name}: {format_validation_error(error)}", retry=False) from None
    spec_dataset = job.spec.dataset.model_copy(update={"source": dataset.source, "dataset_ref": None})
    return job.model_copy(update={"spec": job.spec.model_copy(update={"dataset": spec_dataset})})


def _check_output(job: ClipTrainingJob) -> None:
    uri = job.spec.output.storage_uri
    if not uri:
        raise Problem(
            ConditionReason.INVALID_SPEC,
            f"spec.output.storageUri is required in a cluster, so that checkpoints outlive the trainer pod; set it to {_OUTPUT_FORMS}",
            retry=False,
        )
    try:
        trainer_output(uri)
    except ValueError as error:
        raise Problem(ConditionReason.INVALID_SPEC, str(error), retry=False) from None
    if uri.startswith("s3://") and not job.spec.output.region:
        raise Problem(
            ConditionReason.INVALID_SPEC,
            f"spec.output.region is required for the s3:// output {uri}; set it to the bucket's AWS region, for example eu-west-1",
            retry=False,
        )


def _pool_of(job: ClipTrainingJob, cluster_name: str, cluster: ClipClusterSpec) -> GpuPool:
    pool = cluster.pool(job.spec.infrastructure.gpu_type)
    if pool is None:
        offered = ", ".join(p.gpu_type.value for p in cluster.gpu_pools)
        raise Problem(
            ConditionReason.GPU_TYPE_NOT_OFFERED,
            f"ClipCluster {cluster_name} offers no {job.spec.infrastructure.gpu_type.value} GPUs (it offers {offered}); "
            f"set spec.infrastructure.gpuType to one of them, or ask the platform team to add a pool",
            retry=True,
        )
    return pool


def read_cluster(name: str, api_client: client.ApiClient, lookups: Lookups, *, field: str = "the job") -> ClipClusterSpec:
    """Read and validate ClipCluster ``name``; ``field`` names what referred to it, for the error.

    Raises:
        Problem: the ClipCluster does not exist or its spec is invalid.
    """
    try:
        body = lookups.get(("clipclusters", name), lambda: client.CustomObjectsApi(api_client).get_cluster_custom_object(API_GROUP, VERSION, "clipclusters", name))
    except ApiException as error:
        if error.status == 404:
            raise Problem(
                ConditionReason.CLUSTER_NOT_FOUND,
                f"{field} names ClipCluster {name!r}, which does not exist; kubectl get clipclusters lists the registered ones",
                retry=True,
            ) from None
        raise
    try:
        return ClipClusterSpec.model_validate(body.get("spec", {}))
    except pydantic.ValidationError as error:
        raise Problem(ConditionReason.INVALID_SPEC, f"ClipCluster {name}: {format_validation_error(error)}", retry=True) from None


def _cluster_of(job: ClipTrainingJob, api_client: client.ApiClient, default_cluster: str, lookups: Lookups) -> tuple[str, ClipClusterSpec]:
    infrastructure = job.spec.infrastructure
    name = infrastructure.cluster_ref.name if infrastructure.cluster_ref else default_cluster
    field = "spec.infrastructure.clusterRef" if infrastructure.cluster_ref else "the operator's default cluster (--default-cluster)"
    cluster = read_cluster(name, api_client, lookups, field=field)
    if cluster.type != infrastructure.type:
        raise Problem(
            ConditionReason.INVALID_SPEC,
            f"spec.infrastructure.type is {infrastructure.type.value} but ClipCluster {name} is {cluster.type.value}; "
            f"set spec.infrastructure.type to {cluster.type.value} or choose another cluster",
            retry=False,
        )
    return name, cluster


def _check_secrets(job: ClipTrainingJob, api_client: client.ApiClient, lookups: Lookups) -> None:
    core = client.CoreV1Api(api_client)
    namespace = job.metadata.namespace
    references = [("spec.dataset.source.secretRef", job.spec.dataset.source.secret_ref), ("spec.output.secretRef", job.spec.output.secret_ref)]
    for field, reference in references:
        if reference is None:
            continue
        try:
            lookups.get(("secrets", namespace, reference.name), lambda name=reference.name: _secret_version(core, namespace, name))
        except ApiException as error:
            if error.status == 404:
                raise Problem(
                    ConditionReason.SECRET_NOT_FOUND,
                    f"{field} names Secret {reference.name!r}, which does not exist in namespace {namespace}; create it, "
                    f"for example: kubectl create secret generic {reference.name} -n {namespace} "
                    f"--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...",
                    retry=True,
                ) from None
            raise


def _secret_version(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """Read a Secret and return only its resourceVersion, so no credential stays in the cache."""
    response = core.read_namespaced_secret(name, namespace, _preload_content=False)
    # Reading the body to its end returns the connection to the client's pool.
    return json.loads(response.data)["metadata"]["resourceVersion"]


def _target_namespace(job: ClipTrainingJob, cluster: ClipClusterSpec) -> str:
    if cluster.type == InfrastructureType.BRING_YOUR_OWN:
        return cluster.namespace or DEFAULT_REMOTE_NAMESPACE
    return cluster.namespace or job.metadata.namespace
