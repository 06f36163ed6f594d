"""The Kubernetes objects that run one ClipTrainingJob in its target namespace.

The operator calls ``build_workload`` on every reconcile and applies the result, so the
manifests depend only on the request: no API calls, no clock, no randomness. The pod
template, credentials and RBAC are built in the sibling modules; the names this module
re-exports are the operator's interface.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from kubeclip.builders.credentials import CredentialConflict
from kubeclip.builders.locations import trainer_output
from kubeclip.builders.naming import config_configmap_name, progress_configmap_name
from kubeclip.builders.pod import CACHE_PATH, TRAINER_CONFIG_KEY, TRAINER_CONTAINER, build_pod_template, default_resources
from kubeclip.builders.rbac import build_role, build_role_binding, build_service_account
from kubeclip.builders.request import WorkloadRequest
from kubeclip.builders.trainer_config import build_trainer_config
from kubeclip.trainer.config import RuntimeConfig, TrainerConfig
from kubeclip.trainer.errors import ExitCode

#: Trainer exit codes that no retry can fix: invalid settings and an invalid dataset.
PERMANENT_EXIT_CODES = (int(ExitCode.INVALID_CONFIG), int(ExitCode.INVALID_DATASET))
#: Secret type that Kubernetes ties to a ServiceAccount of the cluster it lives in.
_SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"

__all__ = [
    "CredentialConflict",
    "WorkloadRequest",
    "build_config_configmap",
    "build_progress_configmap",
    "build_secret_copy",
    "build_trainer_job",
    "build_workload",
    "default_resources",
    "trainer_output",
]


def build_workload(request: WorkloadRequest, *, suspend: bool | None = None) -> list[dict[str, Any]]:
    """Build every object of the job's workload, in the order the operator creates them.

    The ServiceAccount, Role and RoleBinding come before the Job, so the trainer's first
    progress write is allowed. Both ConfigMaps come before the Job too, so the pod
    starts without waiting for its config volume.

    Args:
        request: The job and where it runs.
        suspend: ``spec.suspend`` of the batch/v1 Job; None takes the ClipTrainingJob's ``spec.suspend``.

    Raises:
        CredentialConflict: the dataset and the output are on the same kind of store with different Secrets.
    """
    return [
        build_service_account(request),
        build_role(request),
        build_role_binding(request),
        build_config_configmap(request),
        build_progress_configmap(request),
        build_trainer_job(request, suspend=request.job.spec.suspend if suspend is None else suspend),
    ]


def build_trainer_job(request: WorkloadRequest, *, suspend: bool) -> dict[str, Any]:
    """Build the batch/v1 Job that runs the trainer pod and retries it.

    The Job controller retries failed pods up to ``spec.backoffLimit`` times with its
    exponential backoff. Exit codes 2 and 3 fail the Job at once, and pods disrupted by
    preemption, eviction or a lost node are retried without counting. The finished Job is
    kept (no ``ttlSecondsAfterFinished``) because the operator reads its outcome.

    Raises:
        CredentialConflict: the dataset and the output are on the same kind of store with different Secrets.
    """
    spec = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": request.job.spec.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In", "values": list(PERMANENT_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "suspend": suspend,
        "template": build_pod_template(request),
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": request.object_metadata(request.workload), "spec": spec}


def build_trainer_config_for_pod(request: WorkloadRequest) -> TrainerConfig:
    """Build the trainer config as the pod reads it: output under the mount, caches in HOME, no progress bar.

    ``spec.dataset.source.profile`` names an AWS profile of a laptop and is dropped,
    because the pod has no such profile and takes its credentials from the variables.
    """
    runtime = RuntimeConfig(metrics_port=request.metrics_port, metrics_address="0.0.0.0", cache_dir=CACHE_PATH, progress_bar=False)
    config = build_trainer_config(request.job, request.settings, output_location=request.output_location, runtime=runtime)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, profile=None))


def build_config_configmap(request: WorkloadRequest) -> dict[str, Any]:
    """Build the ConfigMap with the trainer config as JSON under ``trainer.json``.

    It contains no credential, only locations, regions and settings.
    """
    config = build_trainer_config_for_pod(request)
    data = {TRAINER_CONFIG_KEY: json.dumps(config.to_dict(), indent=2, sort_keys=True)}
    metadata = request.object_metadata(config_configmap_name(request.workload))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def build_progress_configmap(request: WorkloadRequest) -> dict[str, Any]:
    """Build the empty ConfigMap that the trainer fills with ``progress.json``."""
    metadata = request.object_metadata(progress_configmap_name(request.workload))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {}}


def build_secret_copy(source: dict[str, Any], *, name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """Build the copy of a credentials Secret for a BringYourOwn cluster, which cannot read the original.

    Only ``data`` and ``type`` are copied. The original's annotations, owner references
    and other metadata belong to the home cluster and could point to objects that do not
    exist in the remote one.

    Args:
        source: The Secret as the API returns it (``data`` values in base64), for example
            ``ApiClient.sanitize_for_serialization`` of a ``V1Secret``.

    Raises:
        ValueError: the Secret is a ServiceAccount token, which the remote cluster would not accept.
    """
    secret_type = source.get("type") or "Opaque"
    if secret_type == _SERVICE_ACCOUNT_TOKEN_TYPE:
        original = source.get("metadata", {}).get("name")
        raise ValueError(
            f"Secret {original!r} has type {secret_type}, which belongs to a ServiceAccount of its own cluster and cannot be copied; "
            "store the store credentials in a Secret of type Opaque"
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "type": secret_type,
        "data": dict(source.get("data") or {}),
    }
