"""Jobs, pools and workload requests for the builder tests."""

from __future__ import annotations

import copy
from typing import Any

from kubeclip.api.cluster import GpuPool
from kubeclip.api.job import ClipTrainingJob
from kubeclip.api.loading import parse_job
from kubeclip.api.recommendations import resolve_settings
from kubeclip.builders.workload import WorkloadRequest

JOB_UID = "0f6c1e8e-5b7a-4c55-9d0e-6a1f2b3c4d5e"
TRAINER_IMAGE = "ghcr.io/kubeclip/trainer:test"
#: Node labels and taint of the simulated H100 nodes of ``kubeclip.dev.kwok_config``.
H100_POOL = {
    "gpuType": "H100",
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
L40_POOL = {
    "gpuType": "L40",
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
}

_JOB = {
    "apiVersion": "kubeclip.dev/v1alpha1",
    "kind": "ClipTrainingJob",
    "metadata": {"name": "flowers", "namespace": "team-a"},
    "spec": {
        "dataset": {"source": {"uri": "s3://datasets/flowers.zip", "region": "eu-west-1", "secretRef": {"name": "aws-credentials"}}},
        "infrastructure": {"gpuType": "H100"},
        "output": {"storageUri": "s3://models/flowers", "region": "eu-west-1", "secretRef": {"name": "aws-credentials"}},
    },
}


def job_manifest(name: str = "flowers", namespace: str = "team-a", **spec_changes: Any) -> dict[str, Any]:
    """Return a job manifest; keys like ``output__storageUri`` set nested spec fields, None removes them."""
    document = copy.deepcopy(_JOB)
    document["metadata"] = {"name": name, "namespace": namespace}
    for path, value in spec_changes.items():
        node = document["spec"]
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return document


def make_job(name: str = "flowers", namespace: str = "team-a", **spec_changes: Any) -> ClipTrainingJob:
    return parse_job(job_manifest(name, namespace, **spec_changes))


def make_pool(template: dict[str, Any] = H100_POOL, **changes: Any) -> GpuPool:
    return GpuPool.model_validate({**copy.deepcopy(template), **changes})


def pool_for(job: ClipTrainingJob) -> GpuPool:
    """Return a pool of the job's GPU type; an A100 pool reuses the H100 selector, which no test schedules."""
    gpu_type = job.spec.infrastructure.gpu_type.value
    template = L40_POOL if gpu_type == "L40" else H100_POOL
    return make_pool(template, gpuType=gpu_type)


def make_request(job: ClipTrainingJob | None = None, **changes: Any) -> WorkloadRequest:
    """Return a request for ``job`` (the default job when None) in the job's namespace, with its own Secret names."""
    job = job or make_job()
    source = job.spec.dataset.source
    fields: dict[str, Any] = {
        "job": job,
        "job_uid": JOB_UID,
        "settings": resolve_settings(job),
        "namespace": job.metadata.namespace,
        "pool": pool_for(job),
        "trainer_image": TRAINER_IMAGE,
        "dataset_secret_name": source.secret_ref.name if source and source.secret_ref else None,
        "output_secret_name": job.spec.output.secret_ref.name if job.spec.output.secret_ref else None,
    }
    fields.update(changes)
    return WorkloadRequest(**fields)
