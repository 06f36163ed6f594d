"""The trainer's identity and the one permission it has: writing its own progress ConfigMap.

A trainer runs user-chosen code and models, so its token must not reach anything else:
not other jobs' progress, not Secrets, not the ClipTrainingJob in the home cluster.
"""

from __future__ import annotations

from typing import Any

from kubeclip.builders.naming import progress_configmap_name
from kubeclip.builders.request import WorkloadRequest

#: Verbs the trainer needs to read its progress ConfigMap and write it with a patch or an update.
PROGRESS_VERBS = ("get", "patch", "update")


def build_service_account(request: WorkloadRequest) -> dict[str, Any]:
    """Build the trainer's ServiceAccount; only the trainer pod mounts its token."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": request.object_metadata(request.workload),
        "automountServiceAccountToken": False,
    }


def build_role(request: WorkloadRequest) -> dict[str, Any]:
    """Build the Role that allows get, patch and update on the progress ConfigMap and nothing else.

    ``resourceNames`` cannot restrict ``create`` or ``list``, which is why the operator
    creates the ConfigMap and the Role grants neither.
    """
    rule = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [progress_configmap_name(request.workload)],
        "verbs": list(PROGRESS_VERBS),
    }
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": request.object_metadata(request.workload), "rules": [rule]}


def build_role_binding(request: WorkloadRequest) -> dict[str, Any]:
    """Build the RoleBinding of the Role to the trainer's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": request.object_metadata(request.workload),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": request.workload},
        "subjects": [{"kind": "ServiceAccount", "name": request.workload, "namespace": request.namespace}],
    }
