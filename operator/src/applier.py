"""Create, adopt and delete the trainer objects in a target cluster.

Names are deterministic (``kubeclip.builders.naming``), so "create, and on 409 read the
existing object" never makes a second copy, also after an operator restart. An existing
object that belongs to another job (a different ``kubeclip.dev/job-uid``) is never
taken over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.status import ConditionReason
from kubeclip.builders.naming import (
    JOB_UID_LABEL,
    config_configmap_name,
    dataset_secret_copy_name,
    output_secret_copy_name,
    progress_configmap_name,
)
from kubeclip.operator.clusters import ClusterConnection
from kubeclip.operator.problems import Problem, describe_api_error

logger = logging.getLogger(__name__)


def apply_objects(connection: ClusterConnection, objects: list[dict[str, Any]], uid: str) -> dict[str, Any] | None:
    """Create each object unless it exists; return the batch/v1 Job as the server has it, or None when ``objects`` has none.

    Secrets are replaced when they exist, so a BringYourOwn copy follows rotated credentials.
    The Job and ConfigMaps go into the connection's caches at once, so the next pass does
    not create them again before their watch events arrive.

    Raises:
        Problem: the target namespace does not exist, the operator may not create an object,
            or an object of the same name belongs to another job.
        ApiException: the API server failed for another reason.
    """
    created_job = None
    for body in objects:
        result = _create_or_read(connection, body, uid)
        if body["kind"] == "Job":
            created_job = result
            connection.jobs.remember(result)
        elif body["kind"] == "ConfigMap":
            connection.configmaps.remember(result)
    return created_job


def set_suspend(connection: ClusterConnection, job: dict[str, Any], suspend: bool) -> dict[str, Any]:
    """Set the trainer Job's spec.suspend and return the Job as the server has it."""
    metadata = job["metadata"]
    updated = connection.batch.patch_namespaced_job(metadata["name"], metadata["namespace"], {"spec": {"suspend": suspend}}, _preload_content=False)
    result = json.loads(updated.data)
    connection.jobs.remember(result)
    return result


def delete_objects(connection: ClusterConnection, namespace: str, workload: str, *, include_secrets: bool) -> None:
    """Delete the job's objects by their names, which are fixed; pods go with their Job, and missing objects are skipped.

    Deleting by name needs only the delete verb, which the chart's RBAC grants, not deletecollection.
    """
    core, batch, rbac = connection.core, connection.batch, connection.rbac
    background = client.V1DeleteOptions(propagation_policy="Background")
    steps: list[tuple[Callable[..., Any], str, dict[str, Any]]] = [
        (batch.delete_namespaced_job, workload, {"body": background}),
        (core.delete_namespaced_config_map, config_configmap_name(workload), {}),
        (core.delete_namespaced_config_map, progress_configmap_name(workload), {}),
        (rbac.delete_namespaced_role_binding, workload, {}),
        (rbac.delete_namespaced_role, workload, {}),
        (core.delete_namespaced_service_account, workload, {}),
    ]
    if include_secrets:
        steps += [(core.delete_namespaced_secret, dataset_secret_copy_name(workload), {}), (core.delete_namespaced_secret, output_secret_copy_name(workload), {})]
    for delete, name, arguments in steps:
        try:
            delete(name, namespace, **arguments)
        except ApiException as error:
            if error.status != 404:
                raise


def remaining_pods(connection: ClusterConnection, namespace: str, uid: str) -> list[str]:
    """Name the pods of the job with ``uid`` that still exist, read from the API server and not the cache."""
    pods = connection.core.list_namespaced_pod(namespace, label_selector=f"{JOB_UID_LABEL}={uid}")
    return [pod.metadata.name for pod in pods.items]


def _create_or_read(connection: ClusterConnection, body: dict[str, Any], uid: str) -> dict[str, Any]:
    create, read, replace = _operations(connection, body["kind"])
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        return json.loads(create(namespace, body, _preload_content=False).data)
    except ApiException as error:
        if error.status == 403:
            raise _forbidden_problem(error, body) from None
        if error.status == 404:
            raise Problem(
                ConditionReason.CLUSTER_UNREACHABLE,
                f"namespace {namespace} does not exist in the target cluster; create it, or set spec.namespace of the ClipCluster",
                retry=True,
            ) from None
        if error.status != 409:
            raise
    existing = json.loads(read(name, namespace, _preload_content=False).data)
    owner = (existing["metadata"].get("labels") or {}).get(JOB_UID_LABEL)
    if owner != uid:
        raise Problem(
            ConditionReason.INVALID_SPEC,
            f"{body['kind']} {namespace}/{name} already exists and belongs to another job (job-uid {owner}); "
            f"wait until the old job's objects are deleted, or delete that {body['kind']}",
            retry=True,
        )
    if replace is not None:
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}}
        return json.loads(replace(name, namespace, body, _preload_content=False).data)
    return existing


def _operations(connection: ClusterConnection, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any] | None]:
    core, batch, rbac = connection.core, connection.batch, connection.rbac
    table = {
        "ServiceAccount": (core.create_namespaced_service_account, core.read_namespaced_service_account, None),
        "Role": (rbac.create_namespaced_role, rbac.read_namespaced_role, None),
        "RoleBinding": (rbac.create_namespaced_role_binding, rbac.read_namespaced_role_binding, None),
        "ConfigMap": (core.create_namespaced_config_map, core.read_namespaced_config_map, None),
        "Secret": (core.create_namespaced_secret, core.read_namespaced_secret, core.replace_namespaced_secret),
        "Job": (batch.create_namespaced_job, batch.read_namespaced_job, None),
    }
    if kind not in table:
        raise ValueError(f"the operator does not create objects of kind {kind}")
    return table[kind]


def _forbidden_problem(error: ApiException, body: dict[str, Any]) -> Problem:
    # A 403 is also what an exceeded ResourceQuota returns, so the server's message goes along to tell the two apart.
    namespace = body["metadata"]["namespace"]
    return Problem(
        ConditionReason.CLUSTER_UNREACHABLE,
        f"the operator may not create {body['kind']} objects in namespace {namespace} of the target cluster ({describe_api_error(error)}); "
        f"grant its identity the Role from the Helm chart (mode remoteTarget for a BringYourOwn cluster), or raise the namespace's quota",
        retry=True,
    )
