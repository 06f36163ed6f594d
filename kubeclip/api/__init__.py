"""API types of kubeclip: the ClipTrainingJob and ClipDataset specs, the job status, defaults and validation.

This package depends on nothing else in the project. ``kubeclip.api.crd`` generates the
CRDs in crds/ from these models.
"""

from kubeclip.api.job import API_VERSION, DATASET_KIND, KIND, ClipDataset, ClipDatasetSpec, ClipTrainingJob, ClipTrainingJobSpec
from kubeclip.api.loading import load_job_file
from kubeclip.api.recommendations import ResolvedSettings, resolve_settings
from kubeclip.api.status import ClipTrainingJobStatus, Condition, ConditionReason, ConditionStatus, ConditionType, JobPhase

__all__ = [
    "API_VERSION",
    "DATASET_KIND",
    "KIND",
    "ClipDataset",
    "ClipDatasetSpec",
    "ClipTrainingJob",
    "ClipTrainingJobSpec",
    "ClipTrainingJobStatus",
    "Condition",
    "ConditionReason",
    "ConditionStatus",
    "ConditionType",
    "JobPhase",
    "ResolvedSettings",
    "load_job_file",
    "resolve_settings",
]
