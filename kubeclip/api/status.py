"""The ``ClipTrainingJob`` status: phase, conditions, progress, evaluation and results.

The operator's status module builds these models and patches their JSON form into the
job's status subresource. ``kubeclip.api.crd`` generates the status schema from them, so
the API server prunes any field not declared here. Conditions follow the Kubernetes API
conventions: a list keyed by ``type``, each with a CamelCase ``reason`` from the
constants below and a message for people. Metric values (loss, throughput, recall) are
decimal strings because floats do not round-trip exactly through every client.
"""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Pattern and length limit of a condition reason, the same as metav1.Condition's.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_REASON_MAX_LENGTH = 1024
CONDITION_MESSAGE_MAX_LENGTH = 32768
CONDITION_TYPE_MAX_LENGTH = 316


class ConditionType(str, enum.Enum):
    """Types of the conditions in ``status.conditions``, where the API server keeps one condition per type."""

    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ConditionReason(str, enum.Enum):
    """Reasons of the job's conditions and events, in CamelCase."""

    #: A field is invalid or unsupported; permanent until the spec changes.
    INVALID_SPEC = "InvalidSpec"
    #: spec.dataset.datasetRef names a ClipDataset that does not exist in the namespace.
    DATASET_NOT_FOUND = "DatasetNotFound"
    #: spec.infrastructure.clusterRef (or the default Managed cluster) names no ClipCluster.
    CLUSTER_NOT_FOUND = "ClusterNotFound"
    #: The cluster has no GPU pool of the requested type.
    GPU_TYPE_NOT_OFFERED = "GpuTypeNotOffered"
    #: A Secret the job or its cluster needs does not exist or lacks a key.
    SECRET_NOT_FOUND = "SecretNotFound"
    #: The operator cannot reach the target cluster's API server or is not allowed to.
    CLUSTER_UNREACHABLE = "ClusterUnreachable"
    #: The GPU pool already runs as many trainers as its capacity allows.
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    #: The trainer Job exists and its pod waits for the scheduler.
    WAITING_FOR_SCHEDULER = "WaitingForScheduler"
    #: The scheduler bound the trainer pod to a node.
    POD_SCHEDULED = "PodScheduled"
    #: The trainer pod runs, but the trainer has not reported yet.
    TRAINER_STARTING = "TrainerStarting"
    #: The trainer pod is running and reporting progress.
    TRAINER_RUNNING = "TrainerRunning"
    #: No node with the requested GPU type has a free GPU.
    UNSCHEDULABLE = "Unschedulable"
    #: The container image cannot be pulled.
    IMAGE_PULL_FAILED = "ImagePullFailed"
    #: A trainer attempt failed and a new one resumes from the newest checkpoint.
    RETRYING = "Retrying"
    #: The trainer failed more often than the job allows retries.
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    #: The trainer exited because of its settings or data; a retry would fail the same way.
    CONFIGURATION_ERROR = "ConfigurationError"
    #: The trainer Job was deleted by someone other than the operator.
    WORKLOAD_DELETED = "WorkloadDeleted"
    #: spec.suspend is true: the trainer was stopped and its checkpoints kept.
    SUSPENDED_BY_USER = "SuspendedByUser"
    #: spec.suspend went back to false.
    RESUMED = "Resumed"
    #: The trainer finished and the final model was written.
    TRAINING_COMPLETED = "TrainingCompleted"


class ConditionStatus(str, enum.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class JobPhase(str, enum.Enum):
    """One-word summary of the conditions, shown by ``kubectl get``, which the operator derives from them."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class _StatusModel(BaseModel):
    """Base of the status models: lowerCamelCase names in JSON, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, alias_generator=to_camel)


class Condition(_StatusModel):
    """One aspect of the job's state, as in the Kubernetes API conventions."""

    type: str = Field(min_length=1, max_length=CONDITION_TYPE_MAX_LENGTH, description="Condition type: Scheduled, Running, Succeeded, Failed or Suspended.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=CONDITION_REASON_MAX_LENGTH,
        pattern=CONDITION_REASON_PATTERN,
        description="CamelCase cause of the last transition, for programs, e.g. InvalidSpec or Unschedulable.",
    )
    message: str = Field(max_length=CONDITION_MESSAGE_MAX_LENGTH, description="The cause in words for people, naming the field or object and the fix.")
    last_transition_time: datetime = Field(description="When the status last changed from one of True, False and Unknown to another.")
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation of the spec the condition was set from.")


class TrainingProgress(_StatusModel):
    """How far the trainer has got, from its latest report."""

    epoch: int | None = Field(None, ge=0, description="Current epoch, counted from 1.")
    step: int | None = Field(None, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(None, ge=0, description="Optimizer steps in the whole run, from epochs or maxSteps.")
    loss: str | None = Field(None, description="Training loss at the latest logging step, as a decimal string.")
    samples_per_second: str | None = Field(None, description="Image-caption pairs trained per second since the previous report, as a decimal string.")
    estimated_remaining_seconds: int | None = Field(None, ge=0, description="Estimated seconds until the last step, from the recent throughput.")
    progress_percentage: int | None = Field(
        None, ge=0, le=100, description="Share of totalSteps done, in percent, rounded down; the Progress column of kubectl get."
    )
    last_updated_time: datetime | None = Field(None, description="When the trainer sent this report.")


class EvaluationResults(_StatusModel):
    """Retrieval figures on the validation split from the latest evaluation, as decimal strings."""

    split: str | None = Field(None, description="Split the figures come from: validation (images held out from training).")
    step: int | None = Field(None, ge=0, description="Optimizer step at which the evaluation ran.")
    loss: str | None = Field(None, description="Contrastive loss on the validation split.")
    image_to_text_recall_at1: str | None = Field(None, description="Share of images whose best-scoring caption is one of their own, from 0 to 1.")
    image_to_text_recall_at5: str | None = Field(None, description="Share of images with one of their captions among the 5 best captions, from 0 to 1.")
    text_to_image_recall_at1: str | None = Field(None, description="Share of captions whose own image scores best among all images, from 0 to 1.")
    text_to_image_recall_at5: str | None = Field(None, description="Share of captions whose image is among the 5 best images, from 0 to 1.")
    evaluated_time: datetime | None = Field(None, description="When the evaluation finished.")


class CheckpointRecord(_StatusModel):
    """A complete checkpoint the job can resume from."""

    name: str = Field(min_length=1, description="Folder name of the checkpoint, checkpoint-STEP.")
    step: int = Field(ge=0, description="Optimizer steps done when the checkpoint was saved.")
    uri: str | None = Field(None, description="Location of the checkpoint folder under spec.output.storageUri.")
    saved_time: datetime | None = Field(None, description="When the checkpoint was complete.")


class ResolvedSettingsStatus(_StatusModel):
    """The final value of every model-dependent setting; the JSON form of ``ResolvedSettings.to_status``."""

    model_family: str = Field(description="Family of the text encoder the recommendations came from, e.g. roberta or small.")
    prompt_max_length: int = Field(ge=1, description="Tokens per caption.")
    learning_rate: str = Field(description="Peak learning rate, as a decimal string.")
    per_device_train_batch_size: int = Field(ge=1, description="Image-caption pairs per training step.")
    epochs: int = Field(ge=1, description="Passes over the training images.")
    projection_dim: int = Field(ge=1, description="Size of the shared embedding space.")
    warmup_steps: int | None = Field(None, ge=0, description="Steps of linear warm-up; absent means 5% of all training steps.")
    recommended_fields: list[str] = Field(
        default_factory=list, description="Spec fields (API spelling) that were unset and took the recommended value."
    )


class WorkloadReference(_StatusModel):
    """The location of the trainer: a batch/v1 Job in the target cluster and its current pod."""

    cluster: str = Field(description="ClipCluster the trainer runs in.")
    namespace: str = Field(description="Namespace of the trainer Job in that cluster.")
    job_name: str = Field(description="Name of the batch/v1 Job.")
    pod_name: str | None = Field(None, description="Name of the current trainer pod.")


class ClipTrainingJobStatus(_StatusModel):
    """The observed state of a ClipTrainingJob, written only by the operator."""

    phase: JobPhase | None = Field(None, description="Pending, Scheduling, Running, Succeeded, Failed or Suspended; a summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations of the job's state, at most one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation of the spec this status describes.")
    start_time: datetime | None = Field(None, description="When the trainer first started.")
    completion_time: datetime | None = Field(None, description="When the job succeeded or failed.")
    node_name: str | None = Field(None, description="Node the trainer pod runs on.")
    gpu_type: str | None = Field(None, description="GPU type of the pool the trainer runs on: H100, A100 or L40.")
    progress: TrainingProgress | None = Field(None, description="Steps, loss and throughput from the trainer's latest report.")
    evaluation: EvaluationResults | None = Field(None, description="Figures from the latest evaluation on the validation split.")
    checkpoints: list[CheckpointRecord] = Field(
        default_factory=list,
        description="Complete checkpoints kept under spec.output.storageUri, oldest first.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    model_uri: str | None = Field(None, description="Location of the final model once the job has succeeded.")
    output_uri: str | None = Field(None, description="Location of checkpoints and the final model: spec.output.storageUri as the trainer sees it.")
    failed_attempts: int = Field(0, ge=0, description="Trainer attempts that failed and counted against spec.backoffLimit.")
    workload: WorkloadReference | None = Field(None, description="The trainer Job and pod that run the job.")
    resolved_settings: ResolvedSettingsStatus | None = Field(None, description="Final values of the model-dependent settings and where they came from.")
