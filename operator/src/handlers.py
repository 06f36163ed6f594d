"""Kopf handlers: a daemon per ClipTrainingJob that reconciles it, and the cleanup on deletion.

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
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.cluster import ClipClusterSpec
from kubeclip.api.job import API_GROUP
from kubeclip.builders.naming import CLEANUP_FINALIZER
from kubeclip.api.status import ConditionStatus
from kubeclip.operator.conditions import Conditions, now_iso
from kubeclip.operator.context import OperatorContext
from kubeclip.operator.problems import Problem

PLURAL = "cliptrainingjobs"
VERSION = "v1alpha1"
#: Seconds before a failed pass is retried, doubled up to the maximum.
ERROR_BACKOFF_SECONDS = 2.0
ERROR_BACKOFF_MAX_SECONDS = 60.0
#: Seconds between the checks of a deleted job's terminating pods.
CLEANUP_RECHECK_SECONDS = 2.0
#: Seconds before a failed deletion of the trainer objects is tried again.
CLEANUP_RETRY_SECONDS = 10.0

registry = kopf.OperatorRegistry()
logger = logging.getLogger(__name__)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    context: OperatorContext = memo.context
    settings.persistence.finalizer = CLEANUP_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = context.settings.watch_timeout_seconds
    settings.watching.client_timeout = context.settings.watch_timeout_seconds + 15
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 16
    asyncio.get_running_loop().set_default_executor(context.executor)


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Kopf authenticates with the same credentials as the operator's own client; Kopf calls this again after a 401."""
    return connection_info(memo.context.home_client.configuration)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """Translate a kubernetes client Configuration (kubeconfig or in-cluster) into Kopf's terms."""
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    authorization = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    scheme, token = (authorization.split(" ", 1) if authorization and " " in authorization else ("Bearer", authorization))
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
    memo.context.close()


@kopf.on.event(API_GROUP, VERSION, PLURAL, registry=registry)
def wake_on_change(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Any change of the job (spec.suspend, a status write by someone else) reconciles it at once."""
    memo.context.wakeups.wake(uid)


@kopf.daemon(API_GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
async def run_job(body: kopf.Body, uid: str, namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile the job until it finishes or is deleted; wake on changes, and every resync interval."""
    context: OperatorContext = memo.context
    wakeup = context.wakeups.register(uid)
    backoff = ERROR_BACKOFF_SECONDS
    try:
        while not stopped:
            wakeup.clear()
            try:
                result = await asyncio.to_thread(context.reconciler.reconcile, copy.deepcopy(dict(body)))
                backoff = ERROR_BACKOFF_SECONDS
                delay = context.settings.resync_seconds
                if not result.keep_watching:
                    logger.info("job %s/%s finished in phase %s", namespace, name, result.phase, extra={"job": f"{namespace}/{name}"})
                    await _wait(wakeup, stopped, None)
                    continue
            except ApiException as error:
                context.metrics.errors.labels(f"Http{error.status}").inc()
                logger.warning("job %s/%s: reconciliation failed: %s %s; retrying in %.0f s", namespace, name, error.status, error.reason, backoff, extra={"job": f"{namespace}/{name}"})
                delay, backoff = backoff, min(backoff * 2, ERROR_BACKOFF_MAX_SECONDS)
            except Exception as error:  # noqa: BLE001 - the daemon must outlive any bug in one pass
                context.metrics.errors.labels(type(error).__name__).inc()
                logger.exception("job %s/%s: reconciliation failed; retrying in %.0f s", namespace, name, backoff, extra={"job": f"{namespace}/{name}"})
                delay, backoff = backoff, min(backoff * 2, ERROR_BACKOFF_MAX_SECONDS)
            await _wait(wakeup, stopped, delay)
    finally:
        context.wakeups.unregister(uid)


@kopf.on.delete(API_GROUP, VERSION, PLURAL, registry=registry)
async def delete_trainer(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Delete the trainer objects in the target cluster; keep the finalizer until their pods are gone."""
    context: OperatorContext = memo.context
    try:
        remaining = await asyncio.to_thread(context.reconciler.cleanup, copy.deepcopy(dict(body)))
    except ApiException as error:
        raise kopf.TemporaryError(f"deleting the trainer objects failed: {error.status} {error.reason}", delay=CLEANUP_RETRY_SECONDS) from error
    if remaining:
        raise kopf.TemporaryError(f"waiting for trainer pods {', '.join(remaining)} to stop", delay=CLEANUP_RECHECK_SECONDS)
    logger.info("job %s/%s: trainer objects deleted", namespace, name, extra={"job": f"{namespace}/{name}"})


async def _wait(event: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float | None) -> None:
    """Return when the job is woken, the daemon is asked to stop (the operator exits, the job is deleted), or after ``timeout``."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.timer(API_GROUP, VERSION, "clipclusters", registry=registry, interval=30.0, initial_delay=1.0)
async def probe_cluster(name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Report in the ClipCluster's status whether the operator reaches it, so platform engineers see broken credentials early."""
    context: OperatorContext = memo.context
    await asyncio.to_thread(report_reachability, context, name, dict(spec), dict(status), int(meta.get("generation", 1)))


def report_reachability(context: OperatorContext, name: str, spec: dict[str, Any], status: dict[str, Any], generation: int) -> None:
    reachable, reason, message, version = probe(context, name, spec)
    context.metrics.reachable.labels(name).set(1 if reachable else 0)
    conditions = Conditions(status.get("conditions"), generation=generation, now=now_iso())
    conditions.set_named("Reachable", ConditionStatus.TRUE if reachable else ConditionStatus.FALSE, reason, message)
    patch = {"status": {"conditions": conditions.to_list(), "observedGeneration": generation, "lastProbeTime": now_iso()}}
    if version:
        patch["status"]["serverVersion"] = version
    kube_client.CustomObjectsApi(context.home_client).patch_cluster_custom_object_status(API_GROUP, VERSION, "clipclusters", name, patch)


def probe(context: OperatorContext, name: str, spec: dict[str, Any]) -> tuple[bool, str, str, str | None]:
    """Connect to the cluster as the jobs would, and read its version."""
    try:
        cluster = ClipClusterSpec.model_validate(spec)
        connection = context.registry.connect(name, cluster)
        version = kube_client.VersionApi(connection.api_client).get_code().git_version
    except Problem as problem:
        return False, problem.reason.value, problem.message, None
    except ValueError as error:
        return False, "InvalidSpec", str(error), None
    except Exception as error:  # noqa: BLE001 - any failure to reach the cluster is reported, not raised
        return False, "ClusterUnreachable", f"cannot reach the API server of cluster {name}: {error}", None
    return True, "Connected", f"the operator reaches the API server of cluster {name} (Kubernetes {version})", version
