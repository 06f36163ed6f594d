"""One reconciliation pass of one ClipTrainingJob: resolve, create or adjust the trainer, write the status.

The pass is synchronous (the kubernetes client is) and the Kopf daemon of each job runs
it in a worker thread whenever something about the job changes, and at least every
``resync_seconds``. Everything it reads about the trainer comes from the connection's
caches; it writes only when something must change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.job import API_GROUP
from kubeclip.api.status import ConditionReason, ConditionStatus, ConditionType, JobPhase
from kubeclip.builders.naming import JOB_UID_LABEL, dataset_secret_copy_name, output_secret_copy_name, progress_configmap_name, workload_labels
from kubeclip.builders.workload import WorkloadRequest, build_secret_copy, build_workload
from kubeclip.operator import applier, pods as pod_info
from kubeclip.operator.clusters import ClusterConnection, ClusterRegistry
from kubeclip.operator.conditions import Transition
from kubeclip.operator.events import EventRecorder, is_warning
from kubeclip.operator.metrics import OperatorMetrics
from kubeclip.operator.problems import Problem
from kubeclip.operator.progress import read_report
from kubeclip.operator.resolution import VERSION, Lookups, ResolvedJob, read_cluster, resolve, resolve_references, resolve_placement
from kubeclip.operator.settings import OperatorSettings
from kubeclip.operator.status_builder import TERMINAL_PHASES, Observation, StatusUpdate, build_status, problem_status

logger = logging.getLogger(__name__)

GPU_TYPE_LABEL = "kubeclip.dev/gpu-type"


@dataclass(frozen=True)
class PassResult:
    """The outcome of one pass, for the daemon that runs the passes."""

    phase: str
    #: False once the job is finished: nothing about it will change any more.
    keep_watching: bool


class Reconciler:
    """Runs the passes of every job; one instance per operator process, shared by the worker threads."""

    def __init__(self, home_client: client.ApiClient, settings: OperatorSettings, registry: ClusterRegistry, events: EventRecorder, metrics: OperatorMetrics) -> None:
        self._home = home_client
        self._settings = settings
        self._registry = registry
        self._events = events
        self._metrics = metrics
        self._lookups = Lookups()
        self._capacity_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # The status each job got from its latest write, by job UID, with the resourceVersion the write returned.
        self._written: dict[str, tuple[int, dict[str, Any]]] = {}
        self._written_guard = threading.Lock()

    def reconcile(self, body: dict[str, Any]) -> PassResult:
        """Run one pass.

        Raises:
            ApiException: an API call failed for another reason than those that name a Problem; the caller retries.
        """
        started = time.monotonic()
        metadata = body["metadata"]
        previous = self._previous_status(body)
        generation = int(metadata.get("generation", 1))
        gpu_type = (body.get("spec", {}).get("infrastructure") or {}).get("gpuType", "unknown")
        # A finished job keeps its status: a later edit of its spec describes no model that was trained.
        if previous.get("phase") == JobPhase.SUCCEEDED.value or (
            previous.get("phase") in TERMINAL_PHASES and previous.get("observedGeneration") == generation
        ):
            # Counted here too, so the jobs gauge is right after an operator restart.
            self._metrics.record_phase(metadata["uid"], previous["phase"], gpu_type)
            return PassResult(previous["phase"], keep_watching=False)
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
            self._stop_trainer_of_failed_job(body, problem)
        self._write_status(body, previous, update)
        _log_transitions(body, update.transitions)
        self._events.transitions(body, update.transitions)
        self._record_metrics(metadata, update, gpu_type)
        self._metrics.duration.observe(time.monotonic() - started)
        return PassResult(update.phase, keep_watching=update.phase not in TERMINAL_PHASES)

    def cleanup(self, body: dict[str, Any]) -> list[str]:
        """Delete the job's trainer objects wherever they are; return the pods still terminating.

        Raises:
            ApiException: a deletion failed; the caller retries.
        """
        metadata = body["metadata"]
        self._metrics.forget(metadata["uid"])
        with self._written_guard:
            self._written.pop(metadata["uid"], None)
        try:
            placement = resolve_placement(body, self._home, self._settings.default_cluster)
            connection = self._registry.connect(placement.cluster_name, placement.cluster)
        except Problem as problem:
            logger.warning(
                "trainer objects not deleted, because the job's cluster cannot be found or reached; deleting the job anyway: %s",
                problem.message,
                extra={"job": _reference(body), "reason": problem.reason.value},
            )
            return []
        applier.delete_objects(connection, placement.namespace, placement.workload, include_secrets=placement.is_remote)
        return applier.remaining_pods(connection, placement.namespace, placement.uid)

    def _previous_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the job's status as of the latest write, also when ``body`` does not show that write yet.

        Kopf updates a daemon's body when the watch event of a change arrives, and an
        informer may wake the daemon before that. Building on the older status would
        post every transition of the last pass a second time and move lastTransitionTime.
        """
        uid = body["metadata"]["uid"]
        stored = body.get("status") or {}
        with self._written_guard:
            entry = self._written.get(uid)
            if entry is None:
                return stored
            version, written = entry
            body_version = _integer_version(body)
            if body_version is None or body_version >= version:
                # The body shows this write or a later one; from now on it is the truth.
                del self._written[uid]
                return stored
            return written

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
            self._note_lost_workload(body, resolved)
            resolved = resolve_references(resolved, self._home, self._lookups)
            # The count of active trainers and the creation form one step, or two jobs could both take the last place.
            with self._capacity_guard(resolved, connection):
                waiting = self._capacity_wait(resolved, connection)
                if waiting:
                    return Observation(None, waiting_for_capacity=waiting)
                job = self._create(body, resolved, connection)
        elif bool((job.get("spec") or {}).get("suspend")) != suspend and not _finished(job):
            job = applier.set_suspend(connection, job, suspend)
            logger.info("trainer Job %s", "suspended" if suspend else "resumed", extra={"job": _reference(body), "workload": _workload(resolved)})
        configmap = connection.configmaps.get(resolved.namespace, progress_configmap_name(resolved.workload))
        return Observation(job, connection.pods_of(resolved.uid), read_report(configmap))

    def _note_lost_workload(self, body: dict[str, Any], resolved: ResolvedJob) -> None:
        """Post a warning when the trainer Job of a started job is gone, deleted by someone other than the operator."""
        previous = (body.get("status") or {}).get("workload")
        if not previous:
            return
        message = (
            f"trainer Job {resolved.namespace}/{resolved.workload} in cluster {resolved.cluster_name} was deleted outside the operator; "
            f"creating it again, and the trainer resumes from the newest checkpoint"
        )
        logger.warning(message, extra={"job": _reference(body)})
        self._events.post(body, ConditionReason.WORKLOAD_DELETED.value, message, warning=True)

    def _stop_trainer_of_failed_job(self, body: dict[str, Any], problem: Problem) -> None:
        """Suspend the trainer Job of a job that failed on an invalid change, so it frees its GPU; its checkpoints stay."""
        reference = (body.get("status") or {}).get("workload")
        if problem.retry or not reference:
            return
        try:
            cluster = read_cluster(reference["cluster"], self._home, self._lookups, field="status.workload.cluster")
            connection = self._registry.connect(reference["cluster"], cluster)
            job = connection.jobs.get(reference["namespace"], reference["jobName"])
            if job is not None and not _finished(job) and not (job.get("spec") or {}).get("suspend"):
                applier.set_suspend(connection, job, True)
                logger.info("trainer Job suspended because the job failed", extra={"job": _reference(body), "workload": reference["jobName"]})
        except (Problem, ApiException) as error:
            logger.warning("could not stop the trainer of the failed job: %s", error, extra={"job": _reference(body)})

    def _create(self, body: dict[str, Any], resolved: ResolvedJob, connection: ClusterConnection) -> dict[str, Any] | None:
        secrets = self._secret_names(resolved)
        try:
            objects = build_workload(self._request(body, resolved, secrets))
        except ValueError as error:
            raise Problem(ConditionReason.INVALID_SPEC, str(error), retry=False) from None
        copies = self._secret_copies(resolved, secrets)
        for item in objects:
            if item["kind"] == "Job":
                item["metadata"].setdefault("labels", {})[GPU_TYPE_LABEL] = resolved.gpu_type
        job = applier.apply_objects(connection, [*copies, *objects], resolved.uid)
        logger.info(
            "trainer Job created", extra={"job": _reference(body), "cluster": resolved.cluster_name, "workload": _workload(resolved)}
        )
        return job

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

    def _secret_names(self, resolved: ResolvedJob) -> dict[str, str]:
        """Name the Secret the trainer pod reads for each role: the job's own, or its copy in a BringYourOwn cluster."""
        spec = resolved.job.spec
        names = {}
        for role, reference in (("dataset", spec.dataset.source.secret_ref), ("output", spec.output.secret_ref)):
            if reference is not None:
                copy_name = dataset_secret_copy_name if role == "dataset" else output_secret_copy_name
                names[role] = copy_name(resolved.workload) if resolved.is_remote else reference.name
        return names

    def _secret_copies(self, resolved: ResolvedJob, names: dict[str, str]) -> list[dict[str, Any]]:
        """Build copies of the job's credential Secrets for a BringYourOwn cluster, which cannot read the home cluster's.

        Raises:
            Problem: a Secret cannot be copied; the message from ``build_secret_copy`` explains why.
        """
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
            try:
                copies.append(build_secret_copy(source, name=names[role], namespace=resolved.namespace, labels=labels))
            except ValueError as error:
                # The fix is in the Secret, not in the job, so the job waits as it does for a missing Secret.
                raise Problem(ConditionReason.INVALID_SPEC, str(error), retry=True) from None
        return copies

    def _owner_reference(self, body: dict[str, Any], resolved: ResolvedJob) -> dict[str, Any] | None:
        # An owner reference works only inside one namespace of one cluster.
        if resolved.is_remote or resolved.namespace != resolved.job.metadata.namespace:
            return None
        return {
            "apiVersion": f"{API_GROUP}/{VERSION}", "kind": body["kind"], "name": body["metadata"]["name"],
            "uid": resolved.uid, "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip

    def _capacity_guard(self, resolved: ResolvedJob, connection: ClusterConnection) -> contextlib.AbstractContextManager[Any]:
        """Return the lock of the job's GPU pool when the pool has a capacity, else a no-op."""
        if resolved.pool.capacity is None:
            return contextlib.nullcontext()
        key = f"{connection.key}/{resolved.gpu_type}"
        with self._locks_guard:
            return self._capacity_locks.setdefault(key, threading.Lock())

    def _capacity_wait(self, resolved: ResolvedJob, connection: ClusterConnection) -> str | None:
        """Return a message when the pool already runs its capacity of trainers, else None; the caller holds the pool's lock."""
        capacity = resolved.pool.capacity
        if capacity is None:
            return None
        active = connection.jobs.select(
            lambda job: (job["metadata"].get("labels") or {}).get(GPU_TYPE_LABEL) == resolved.gpu_type
            and not _finished(job)
            and not (job.get("spec") or {}).get("suspend")
        )
        if len(active) < capacity:
            return None
        return f"GPU pool {resolved.gpu_type} of cluster {resolved.cluster_name} runs {len(active)} trainers, its capacity; the job starts when one finishes"

    def _write_status(self, body: dict[str, Any], previous: dict[str, Any], update: StatusUpdate) -> None:
        # The API server drops null fields, so a status with None values would never equal the stored one.
        status = _without_none(update.status)
        if _same(previous, status):
            return
        metadata = body["metadata"]
        # Fields that the new status no longer has are removed explicitly: a merge patch keeps what it does not mention.
        patch = {"status": {**{key: None for key in previous if key not in status}, **status}}
        try:
            written = client.CustomObjectsApi(self._home).patch_namespaced_custom_object_status(
                API_GROUP, VERSION, metadata["namespace"], "cliptrainingjobs", metadata["name"], patch
            )
        except ApiException as error:
            if error.status != 404:
                raise
            logger.debug("job deleted before its status was written", extra={"job": _reference(body)})
            return
        version = _integer_version(written)
        if version is not None:
            with self._written_guard:
                self._written[metadata["uid"]] = (version, written.get("status") or {})

    def _record_metrics(self, metadata: dict[str, Any], update: StatusUpdate, gpu_type: str) -> None:
        self._metrics.record_phase(metadata["uid"], update.phase, gpu_type)
        for transition in update.transitions:
            if transition.type == ConditionType.SCHEDULED and transition.status == ConditionStatus.TRUE:
                scheduled = next(item for item in update.status["conditions"] if item["type"] == ConditionType.SCHEDULED.value)
                self._metrics.record_scheduled(metadata["uid"], gpu_type, metadata.get("creationTimestamp", ""), scheduled["lastTransitionTime"])


def _log_transitions(body: dict[str, Any], transitions: list[Transition]) -> None:
    """Log each condition transition once, at ERROR for a failed job, WARNING for a problem the user can fix, else INFO."""
    for transition in transitions:
        if transition.type == ConditionType.FAILED and transition.status == ConditionStatus.TRUE:
            level = logging.ERROR
        elif is_warning(transition.reason):
            level = logging.WARNING
        else:
            level = logging.INFO
        extra = {"job": _reference(body), "condition": transition.type.value, "status": transition.status.value, "reason": transition.reason}
        logger.log(level, "%s is %s (%s): %s", transition.type.value, transition.status.value, transition.reason, transition.message, extra=extra)


def _reference(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def _workload(resolved: ResolvedJob) -> str:
    return f"{resolved.namespace}/{resolved.workload}"


def _finished(job: dict[str, Any]) -> bool:
    return any(pod_info.job_condition(job, kind) for kind in ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"))


def _integer_version(item: dict[str, Any]) -> int | None:
    """Return the object's resourceVersion as etcd's integer revision, or None when it is not one."""
    try:
        return int((item.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _same(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    return json.dumps(previous, sort_keys=True, default=str) == json.dumps(status, sort_keys=True, default=str)
