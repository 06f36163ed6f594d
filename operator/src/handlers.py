"""Kopf handlers: a daemon per ClipTrainingJob that reconciles it, the cleanup on deletion,
and a periodic probe of each ClipCluster.

The handlers live in their own ``kopf.OperatorRegistry``, so importing this module
registers nothing globally, and tests can start operators in subprocesses only.

Kopf keeps its bookkeeping in annotations under kubeclip.dev (the status schema is
closed), and the finalizer ``kubeclip.dev/cleanup`` holds a deleted job until its
trainer objects are gone from the target cluster, remote ones included.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf
import pydantic
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.cluster import ClipClusterSpec
from kubeclip.api.job import API_GROUP
from kubeclip.api.loading import format_validation_error
from kubeclip.api.status import ConditionReason, ConditionStatus
from kubeclip.builders.naming import CLEANUP_FINALIZER
from kubeclip.operator.conditions import Conditions, now_iso
from kubeclip.operator.context import WORKER_THREADS, OperatorContext
from kubeclip.operator.problems import Problem, describe_api_error

PLURAL = "cliptrainingjobs"
VERSION = "v1alpha1"
#: Seconds before a failed pass is retried, doubled up to the maximum.
ERROR_BACKOFF_SECONDS = 2.0
ERROR_BACKOFF_MAX_SECONDS = 60.0
#: Seconds between the checks of a deleted job's terminating pods.
CLEANUP_RECHECK_SECONDS = 2.0
#: Seconds before a failed deletion of the trainer objects is tried again.
CLEANUP_RETRY_SECONDS = 10.0
#: Seconds between two probes of each ClipCluster, and before the first.
PROBE_INTERVAL_SECONDS = 30.0
PROBE_INITIAL_DELAY_SECONDS = 1.0

registry = kopf.OperatorRegistry()
logger = logging.getLogger(__name__)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Set Kopf's storage, timeouts and worker threads, and make the worker pool the loop's default executor."""
    context: OperatorContext = memo.context
    settings.persistence.finalizer = CLEANUP_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = context.settings.watch_timeout_seconds
    settings.watching.client_timeout = context.settings.watch_timeout_seconds + 15
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.execution.max_workers = WORKER_THREADS
    asyncio.get_running_loop().set_default_executor(context.executor)
    context.background_tasks.append(asyncio.get_running_loop().create_task(probe_clusters_forever(context)))


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Authenticate Kopf with the same credentials as the operator's own client; Kopf calls this again after a 401."""
    return connection_info(memo.context.home_client.configuration)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """Translate a kubernetes client Configuration (kubeconfig or in-cluster) into Kopf's terms."""
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    api_key = configuration.api_key or {}
    authorization = api_key.get("authorization") or api_key.get("BearerToken")
    scheme, token = authorization.split(" ", 1) if authorization and " " in authorization else ("Bearer", authorization)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme if token else None,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.cleanup(registry=registry)
def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the informers and close the clients when the operator exits."""
    logger.info("kubeclip operator stopping; running trainers are not affected and are adopted by the next operator")
    memo.context.close()


@kopf.on.event(API_GROUP, VERSION, PLURAL, registry=registry)
def wake_on_change(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile the job at once after any change of it (spec.suspend, a status write by someone else)."""
    memo.context.wakeups.wake(uid)


@kopf.daemon(API_GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
async def run_job(body: kopf.Body, uid: str, namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile the job until it is deleted: at once on changes, every resync interval, and with backoff after errors.

    ``body`` is Kopf's live view of the job, so each pass copies it.
    """
    context: OperatorContext = memo.context
    reference = f"{namespace}/{name}"
    wakeup = context.wakeups.register(uid)
    backoff = ERROR_BACKOFF_SECONDS
    finished_phase: str | None = None
    delay: float | None
    try:
        while not stopped:
            wakeup.clear()
            try:
                result = await asyncio.to_thread(context.reconciler.reconcile, copy.deepcopy(dict(body)))
            except Exception as error:  # noqa: BLE001 - the daemon must outlive any bug in one pass
                _log_pass_error(context, reference, error, backoff)
                delay = backoff
                backoff = min(backoff * 2, ERROR_BACKOFF_MAX_SECONDS)
            else:
                backoff = ERROR_BACKOFF_SECONDS
                # A finished job waits for a change of its spec, which starts a new generation, or for its deletion.
                delay = context.settings.resync_seconds if result.keep_watching else None
                if not result.keep_watching and result.phase != finished_phase:
                    logger.info("job finished in phase %s", result.phase, extra={"job": reference, "phase": result.phase})
                finished_phase = None if result.keep_watching else result.phase
            await _wait(wakeup, stopped, delay)
    finally:
        context.wakeups.unregister(uid, wakeup)


def _log_pass_error(context: OperatorContext, reference: str, error: Exception, backoff: float) -> None:
    """Count and log a failed pass: an API error as one line, anything else with its traceback."""
    if isinstance(error, ApiException):
        context.metrics.errors.labels(f"Http{error.status}").inc()
        detail = describe_api_error(error)
        logger.warning("reconciliation failed; retrying in %.0f s: %s", backoff, detail, extra={"job": reference, "http_status": error.status})
    else:
        context.metrics.errors.labels(type(error).__name__).inc()
        logger.error("reconciliation failed; retrying in %.0f s", backoff, exc_info=error, extra={"job": reference})


@kopf.on.delete(API_GROUP, VERSION, PLURAL, registry=registry)
async def delete_trainer(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Delete the trainer objects in the target cluster; keep the finalizer until their pods are gone."""
    context: OperatorContext = memo.context
    try:
        remaining = await asyncio.to_thread(context.reconciler.cleanup, copy.deepcopy(dict(body)))
    except ApiException as error:
        raise kopf.TemporaryError(f"deleting the trainer objects failed: {describe_api_error(error)}", delay=CLEANUP_RETRY_SECONDS) from error
    if remaining:
        raise kopf.TemporaryError(f"waiting for trainer pods {', '.join(remaining)} to stop", delay=CLEANUP_RECHECK_SECONDS)
    logger.info("trainer objects deleted", extra={"job": f"{namespace}/{name}"})


async def _wait(event: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float | None) -> None:
    """Return when the job is woken, the daemon is asked to stop (the operator exits, the job is deleted), or after ``timeout``."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.event(API_GROUP, VERSION, "clipclusters", registry=registry)
def forget_deleted_cluster(event: kopf.RawEvent, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Stop the informers of a deleted BringYourOwn ClipCluster, which would otherwise watch it until the operator exits."""
    if event["type"] == "DELETED":
        memo.context.registry.forget(name)


async def probe_clusters_forever(context: OperatorContext) -> None:
    """Report every ClipCluster's reachability every PROBE_INTERVAL_SECONDS, until the operator stops.

    A loop of its own rather than a Kopf timer: Kopf puts a finalizer on every object
    that has a timer, so deleting a ClipCluster would wait for a running operator, and
    the operator would need write access to ClipClusters themselves.
    """
    await asyncio.sleep(PROBE_INITIAL_DELAY_SECONDS)
    while True:
        try:
            await asyncio.to_thread(probe_all_clusters, context)
        except Exception as error:  # noqa: BLE001 - one failed round must not end the loop
            logger.warning("probing the ClipClusters failed: %s; trying again in %.0f s", error, PROBE_INTERVAL_SECONDS)
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)


def probe_all_clusters(context: OperatorContext) -> None:
    listing = kube_client.CustomObjectsApi(context.home_client).list_cluster_custom_object(API_GROUP, VERSION, "clipclusters")
    for item in listing.get("items", []):
        metadata = item["metadata"]
        report_reachability(context, metadata["name"], item.get("spec") or {}, item.get("status") or {}, int(metadata.get("generation", 1)))


def report_reachability(context: OperatorContext, name: str, spec: dict[str, Any], status: dict[str, Any], generation: int) -> None:
    """Probe one ClipCluster and patch its Reachable condition, server version and probe time."""
    reachable, reason, message, version = probe(context, name, spec)
    context.metrics.reachable.labels(name).set(1 if reachable else 0)
    conditions = Conditions(status.get("conditions"), generation=generation, now=now_iso())
    changed = conditions.set_named("Reachable", ConditionStatus.TRUE if reachable else ConditionStatus.FALSE, reason, message)
    if changed:
        level = logging.INFO if reachable else logging.WARNING
        logger.log(level, "cluster %s: %s", "reachable" if reachable else "unreachable", message, extra={"cluster": name, "reason": reason})
    patch: dict[str, Any] = {"status": {"conditions": conditions.to_list(), "observedGeneration": generation, "lastProbeTime": now_iso()}}
    if version:
        patch["status"]["serverVersion"] = version
    kube_client.CustomObjectsApi(context.home_client).patch_cluster_custom_object_status(API_GROUP, VERSION, "clipclusters", name, patch)


def probe(context: OperatorContext, name: str, spec: dict[str, Any]) -> tuple[bool, str, str, str | None]:
    """Connect to the cluster as the jobs would, and read its version.

    Returns:
        Whether the cluster's API server returned its version, the Reachable condition's reason and message, and that version.
    """
    try:
        cluster = ClipClusterSpec.model_validate(spec)
        connection = context.registry.connect(name, cluster)
        version = kube_client.VersionApi(connection.api_client).get_code().git_version
    except Problem as problem:
        return False, problem.reason.value, problem.message, None
    except pydantic.ValidationError as error:
        return False, ConditionReason.INVALID_SPEC.value, f"ClipCluster {name}: {format_validation_error(error)}", None
    except Exception as error:  # noqa: BLE001 - any failure to reach the cluster is reported, not raised
        detail = describe_api_error(error) if isinstance(error, ApiException) else f"{type(error).__name__}: {error}"
        return False, ConditionReason.CLUSTER_UNREACHABLE.value, f"cannot reach the API server of cluster {name}: {detail}", None
    return True, "Connected", f"the operator reaches the API server of cluster {name} (Kubernetes {version})", version
