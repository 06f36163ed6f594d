"""One reconciliation pass of one ClipTrainingJob: resolve, create or adjust the trainer, write the status.

The pass is synchronous (the kubernetes client is) and the Kopf daemon of each job runs
it in a worker thread whenever something about the job changes, and at least every
``resync_seconds``. Everything it reads about the trainer comes from the connection's
caches; it writes only when something must change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.job import API_GROUP
from kubeclip.api.status import ConditionReason, ConditionStatus, ConditionType
from kubeclip.builders.naming import JOB_UID_LABEL, dataset_secret_copy_name, output_secret_copy_name, progress_configmap_name, workload_labels
from kubeclip.builders.workload import WorkloadRequest, build_secret_copy, build_workload
from kubeclip.operator import applier, pods as pod_info
from kubeclip.operator.clusters import ClusterConnection, ClusterRegistry
from kubeclip.operator.events import EventRecorder
from kubeclip.operator.metrics import OperatorMetrics
from kubeclip.operator.problems import Problem
from kubeclip.operator.progress import read_report
from kubeclip.operator.resolution import VERSION, Lookups, ResolvedJob, resolve
from kubeclip.operator.settings import OperatorSettings
from kubeclip.operator.status_builder import TERMINAL_PHASES, Observation, StatusUpdate, build_status, problem_status

logger = logging.getLogger(__name__)

GPU_TYPE_LABEL = "kubeclip.dev/gpu-type"


@dataclass(frozen=True)
class PassResult:
    phase: str
    #: False once the job is finished: nothing about it will change any more.
    keep_watching: bool


class Reconciler:
    def __init__(self, home_client: client.ApiClient, settings: OperatorSettings, registry: ClusterRegistry, events: EventRecorder, metrics: OperatorMetrics) -> None:
        self._home = home_client
        self._settings = settings
        self._registry = registry
        self._events = events
        self._metrics = metrics
        self._lookups = Lookups()
        self._capacity_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def reconcile(self, body: dict[str, Any]) -> PassResult:
        """Run one pass; ApiExceptions other than the ones that name a problem propagate for a retry."""
        started = time.monotonic()
        metadata = body["metadata"]
        previous = body.get("status") or {}
        generation = int(metadata.get("generation", 1))
        if previous.get("phase") in TERMINAL_PHASES and previous.get("observedGeneration") == generation:
            return PassResult(previous["phase"], keep_watching=False)
        gpu_type = (body.get("spec", {}).get("infrastructure") or {}).get("gpuType", "unknown")
        try:
            resolved = resolve(body, self._home, self._settings.default_cluster, self._lookups)
            connection = self._registry.connect(resolved.cluster_name, resolved.cluster)
            self._metrics.reachable.labels(resolved.cluster_name).set(1)
            observation = self._observe_and_act(body, resolved, connection)
            update = build_status(previous, resolved, observation)
        except Problem as problem:
            if problem.reason == ConditionReason.CLUSTER_UNREACHABLE:
                self._metrics.errors.labels(problem.reason.value).inc()
            update = problem_status(previous, problem, generation)
        self._write_status(body, previous, update)
        self._events.transitions(body, update.transitions)
        self._record_metrics(metadata, update, gpu_type)
        self._metrics.duration.observe(time.monotonic() - started)
        return PassResult(update.phase, keep_watching=update.phase not in TERMINAL_PHASES)

    def cleanup(self, body: dict[str, Any]) -> list[str]:
        """Delete the job's trainer objects wherever they are; return the pods still terminating."""
        metadata = body["metadata"]
        self._metrics.forget(metadata["uid"])
        try:
            resolved = resolve(body, self._home, self._settings.default_cluster)
            connection = self._registry.connect(resolved.cluster_name, resolved.cluster)
        except Problem as problem:
            logger.warning("job %s/%s: cannot reach its cluster to delete the trainer (%s); deleting the job anyway", metadata["namespace"], metadata["name"], problem.message)
            return []
        applier.delete_objects(connection, resolved.namespace, resolved.workload, include_secrets=resolved.is_remote)
        return applier.remaining_pods(connection, resolved.namespace, resolved.uid)

    def _observe_and_act(self, body: dict[str, Any], resolved: ResolvedJob, connection: ClusterConnection) -> Observation:
        job = connection.jobs.get(resolved.namespace, resolved.workload)
        if job is not None and (job["metadata"].get("labels") or {}).get(JOB_UID_LABEL) != resolved.uid:
            raise Problem(
                ConditionReason.WAITING_FOR_SCHEDULER,
                f"a trainer Job {resolved.namespace}/{resolved.workload} of an earlier job with the same name still exists; "
                f"it is being deleted, and this job starts once it is gone",
                retry=True,
            )
        suspend = resolved.job.spec.suspend
        if job is None:
            waiting = self._capacity_wait(resolved, connection)
            if waiting:
                return Observation(None, waiting_for_capacity=waiting)
            job = self._create(body, resolved, connection)
        elif bool((job.get("spec") or {}).get("suspend")) != suspend and not _finished(job):
            job = applier.set_suspend(connection, job, suspend)
        configmap = connection.configmaps.get(resolved.namespace, progress_configmap_name(resolved.workload))
        return Observation(job, connection.pods_of(resolved.uid), read_report(configmap))

    def _create(self, body: dict[str, Any], resolved: ResolvedJob, connection: ClusterConnection) -> dict[str, Any] | None:
        secrets = self._secret_names(resolved, connection)
        try:
            objects = build_workload(self._request(body, resolved, secrets))
        except ValueError as error:
            raise Problem(ConditionReason.INVALID_SPEC, str(error), retry=False) from None
        for item in objects:
            if item["kind"] == "Job":
                item["metadata"].setdefault("labels", {})[GPU_TYPE_LABEL] = resolved.gpu_type
        copies = self._secret_copies(resolved, secrets)
        return applier.apply_objects(connection, [*copies, *objects], resolved.uid)

    def _request(self, body: dict[str, Any], resolved: ResolvedJob, secrets: dict[str, str]) -> WorkloadRequest:
        return WorkloadRequest(
            job=resolved.job,
            job_uid=resolved.uid,
            settings=resolved.settings,
            namespace=resolved.namespace,
            pool=resolved.pool,
            trainer_image=self._settings.trainer_image,
            image_pull_policy=self._settings.image_pull_policy,
            owner_reference=self._owner_reference(body, resolved),
            dataset_secret_name=secrets.get("dataset"),
            output_secret_name=secrets.get("output"),
            termination_grace_seconds=self._settings.termination_grace_seconds,
            node_lost_toleration_seconds=self._settings.node_lost_toleration_seconds,
        )

    def _secret_names(self, resolved: ResolvedJob, connection: ClusterConnection) -> dict[str, str]:
        spec = resolved.job.spec
        names = {}
        for role, reference in (("dataset", spec.dataset.source.secret_ref), ("output", spec.output.secret_ref)):
            if reference is not None:
                copy_name = dataset_secret_copy_name if role == "dataset" else output_secret_copy_name
                names[role] = copy_name(resolved.workload) if resolved.is_remote else reference.name
        return names

    def _secret_copies(self, resolved: ResolvedJob, names: dict[str, str]) -> list[dict[str, Any]]:
        """For a BringYourOwn cluster, copies of the job's credential Secrets, which the remote cluster cannot read."""
        if not resolved.is_remote:
            return []
        spec = resolved.job.spec
        core = client.CoreV1Api(self._home)
        labels = workload_labels(resolved.job.metadata.namespace, resolved.job.metadata.name, resolved.uid, resolved.workload)
        copies = []
        for role, reference in (("dataset", spec.dataset.source.secret_ref), ("output", spec.output.secret_ref)):
            if reference is None:
                continue
            source = json.loads(core.read_namespaced_secret(reference.name, resolved.job.metadata.namespace, _preload_content=False).data)
            copies.append(build_secret_copy(source, name=names[role], namespace=resolved.namespace, labels=labels))
        return copies

    def _owner_reference(self, body: dict[str, Any], resolved: ResolvedJob) -> dict[str, Any] | None:
        if resolved.is_remote or resolved.namespace != resolved.job.metadata.namespace:
            return None
        return {
            "apiVersion": f"{API_GROUP}/{VERSION}", "kind": body["kind"], "name": body["metadata"]["name"],
            "uid": resolved.uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip

    def _capacity_wait(self, resolved: ResolvedJob, connection: ClusterConnection) -> str | None:
        """A message when the pool already runs its capacity of trainers, else None."""
        capacity = resolved.pool.capacity
        if capacity is None:
            return None
        lock = self._lock_for(f"{connection.key}/{resolved.gpu_type}")
        with lock:
            active = connection.jobs.select(
                lambda job: (job["metadata"].get("labels") or {}).get(GPU_TYPE_LABEL) == resolved.gpu_type
                and not _finished(job)
                and not (job.get("spec") or {}).get("suspend")
            )
            if len(active) >= capacity:
                return f"GPU pool {resolved.gpu_type} of cluster {resolved.cluster_name} runs {len(active)} trainers, its capacity; the job starts when one finishes"
        return None

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._capacity_locks.setdefault(key, threading.Lock())

    def _write_status(self, body: dict[str, Any], previous: dict[str, Any], update: StatusUpdate) -> None:
        # The API server drops null fields, so a status with None values would never equal the stored one.
        status = _without_none(update.status)
        if _same(previous, status):
            return
        metadata = body["metadata"]
        # Fields that the new status no longer has are removed explicitly: a merge patch keeps what it does not mention.
        patch = {"status": {**{key: None for key in previous if key not in status}, **status}}
        try:
            client.CustomObjectsApi(self._home).patch_namespaced_custom_object_status(
                API_GROUP, VERSION, metadata["namespace"], "cliptrainingjobs", metadata["name"], patch
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def _record_metrics(self, metadata: dict[str, Any], update: StatusUpdate, gpu_type: str) -> None:
        self._metrics.record_phase(metadata["uid"], update.phase, gpu_type)
        for transition in update.transitions:
            if transition.type == ConditionType.SCHEDULED and transition.status == ConditionStatus.TRUE:
                scheduled = next(item for item in update.status["conditions"] if item["type"] == ConditionType.SCHEDULED.value)
                self._metrics.record_scheduled(metadata["uid"], gpu_type, metadata.get("creationTimestamp", ""), scheduled["lastTransitionTime"])


def _finished(job: dict[str, Any]) -> bool:
    return any(pod_info.job_condition(job, kind) for kind in ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _same(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    return json.dumps(previous, sort_keys=True, default=str) == json.dumps(status, sort_keys=True, default=str)
