"""The ``ClipTrainingJob`` spec: every setting, its default, and its validation.

These pydantic models are the only hand-written schema of the API. The CLI parses job
files with them, the builders turn them into the trainer's config, and the CRD schema
is generated from them. So field names are the Kubernetes (lowerCamelCase) names and
every field has a description that ``kubectl explain`` can show.

Checks that the API server can run itself are written next to the field as CEL rules
(the ``x-kubernetes-validations`` key of ``json_schema_extra``), which
``kubeclip.api.crd`` copies into the CRD. The pydantic validators make the same checks
for laptop runs, which never reach an API server. ``ClipDataset``, a dataset registered
once and referenced by jobs through ``spec.dataset.datasetRef``, is defined here too
because it reuses ``DatasetSource``.

Settings whose best value depends on the base model (learning rate, prompt length,
batch size, epochs, projection size, warm-up) have no schema default: an unset field
is ``None`` and ``kubeclip.api.recommendations`` fills it for the chosen model, so an
explicit value always wins over a recommendation.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_GROUP = "kubeclip.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "ClipTrainingJob"
DATASET_KIND = "ClipDataset"

# Decimal or scientific notation such as "1e-5", "0.00002" or "2.5E-4". Hyperparameters
# are strings in the API because JSON floats do not round-trip exactly through every
# client (a YAML 1e-5 can come back as 9.999999999999999e-06).
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Key of ``json_schema_extra`` whose list of CEL rules goes into the CRD schema unchanged.
CEL_RULES_KEY = "x-kubernetes-validations"
# The pydantic check of trainSplitRatio + validationSplitRatio == 1 and its CEL twin
# allow this much rounding error.
_SPLIT_SUM_TOLERANCE = 1e-6


def cel_rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """Build one CEL validation rule as the CRD schema spells it.

    Args:
        rule: CEL expression evaluated with ``self`` bound to the field (and ``oldSelf``
            to its stored value, which makes it a transition rule).
        message: Error the API server returns when the rule is false; it names the field and the fix.
        field_path: Path, relative to ``self``, that the API server reports, such as ``.region``.
        reason: FieldValueInvalid (the API server's default), FieldValueRequired,
            FieldValueForbidden or FieldValueDuplicate.
    """
    definition = {"rule": rule, "message": message}
    if field_path is not None:
        definition["fieldPath"] = field_path
    if reason is not None:
        definition["reason"] = reason
    return definition


def _immutable_after_creation(field: str, remedy: str) -> dict[str, list[dict[str, str]]]:
    # A transition rule runs only on updates where the field exists in both versions.
    message = f"{field} is immutable after the job is created; {remedy}"
    return {CEL_RULES_KEY: [cel_rule("self == oldSelf", message)]}


class _ApiModel(BaseModel):
    """Base of the API models: camelCase names, unknown fields rejected, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelType(str, enum.Enum):
    CLIP = "CLIP"


class ModelPreset(str, enum.Enum):
    SMALL = "Small"


class SplitType(str, enum.Enum):
    RANDOM = "Random"


class InfrastructureType(str, enum.Enum):
    MANAGED = "Managed"
    BRING_YOUR_OWN = "BringYourOwn"
    STANDALONE = "Standalone"


class GpuType(str, enum.Enum):
    H100 = "H100"
    A100 = "A100"
    L40 = "L40"


class TorchDtype(str, enum.Enum):
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class LrScheduler(str, enum.Enum):
    COSINE = "Cosine"
    LINEAR = "Linear"
    CONSTANT = "Constant"


class DistributedConfiguration(str, enum.Enum):
    SINGLE = "Single"


class DatasetType(str, enum.Enum):
    ZIP_JSONL = "ZipJsonl"


class LocalObjectReference(_ApiModel):
    """A reference to an object by name in the referring object's own namespace."""

    name: str = Field(description="Name of the referenced object, in the referring object's namespace.", min_length=1)


class ModelSpec(_ApiModel):
    """The dual encoder to fine-tune."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule(
                    "!has(self.lora)",
                    "LoRA is not supported because kubeclip fine-tunes both encoders fully; remove spec.model.lora",
                    field_path=".lora",
                    reason="FieldValueForbidden",
                )
            ]
        }
    )

    type: ModelType = Field(ModelType.CLIP, description="Model family. CLIP (a vision and a text encoder trained contrastively) is the only one.")
    base_model: str = Field(
        "FacebookAI/roberta-base",
        alias="baseModel",
        min_length=1,
        description="Text encoder: a Hugging Face model id, a local directory, or an s3:// or gs:// directory. "
        "Choosing it fills the model-dependent settings with recommended values.",
    )
    vision_encoder: str = Field(
        "openai/clip-vit-base-patch32",
        alias="visionEncoder",
        min_length=1,
        description="Vision encoder: a Hugging Face model id, a local directory, or an s3:// or gs:// directory of a CLIP vision model.",
    )
    preset: ModelPreset | None = Field(
        None,
        description="Small: small randomly initialised encoders of the same architectures and a tokenizer "
        "trained on the captions; needs no download. For demos and smoke tests, not for real fine-tuning.",
    )
    projection_dim: int | None = Field(
        None, alias="projectionDim", ge=1, le=8192, description="Size of the shared embedding space. Default: recommended for the model (512)."
    )
    lora: dict[str, Any] | None = Field(None, description="Not supported: kubeclip does full fine-tuning. Remove this field.")

    @field_validator("lora")
    @classmethod
    def _reject_lora(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise ValueError("LoRA is not supported: kubeclip does full fine-tuning of both encoders; remove spec.model.lora")
        return None


class ClusterReference(_ApiModel):
    """A reference to a cluster-scoped ClipCluster by name."""

    name: str = Field(description="Name of the ClipCluster; kubectl get clipclusters lists them.", min_length=1)


class DatasetSource(_ApiModel):
    """The location of a dataset ZIP (images plus one JSONL file of captions)."""

    # Cluster-only check: a laptop run can take the region from the AWS profile, so the
    # pydantic model accepts an s3:// uri without a region.
    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule(
                    "!self.uri.startsWith('s3://') || has(self.region)",
                    "region is required when the source uri starts with s3://; set source.region to the bucket's AWS region, for example eu-west-1",
                    field_path=".region",
                    reason="FieldValueRequired",
                )
            ]
        }
    )

    uri: str = Field(
        min_length=1,
        description="Location of the ZIP: s3://bucket/key.zip, gs://bucket/object.zip, https://..., "
        "builtin://NAME for a dataset shipped with kubeclip, or a local file path for laptop runs.",
    )
    region: str | None = Field(None, description="S3 region of the bucket. Required for s3:// sources in a cluster.")
    secret_ref: LocalObjectReference | None = Field(
        None,
        alias="secretRef",
        description="Secret with the store's credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3, "
        "or a service-account JSON under the key service-account.json for GCS.",
    )
    profile: str | None = Field(None, description="Named AWS profile for laptop runs; ignored in a cluster.")


class DatasetSpec(_ApiModel):
    """The training data and how captions become model input."""

    # The API server applies the split ratios' defaults before it evaluates these rules,
    # so both ratios are always present.
    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule(
                    "has(self.source) != has(self.datasetRef)",
                    "set exactly one of spec.dataset.source (an inline dataset) and spec.dataset.datasetRef (a registered ClipDataset)",
                ),
                cel_rule(
                    f"self.trainSplitRatio + self.validationSplitRatio > {1 - _SPLIT_SUM_TOLERANCE}"
                    f" && self.trainSplitRatio + self.validationSplitRatio < {1 + _SPLIT_SUM_TOLERANCE}",
                    "spec.dataset.trainSplitRatio and spec.dataset.validationSplitRatio must sum to 1; for example set 0.9 and 0.1",
                ),
            ]
        }
    )

    source: DatasetSource | None = Field(None, description="The dataset given inline. Exactly one of source and datasetRef is set.")
    dataset_ref: LocalObjectReference | None = Field(
        None, alias="datasetRef", description="A registered ClipDataset in the job's namespace. Exactly one of source and datasetRef is set."
    )
    lazy_tokenize: bool = Field(False, alias="lazyTokenize", description="Tokenize captions in the data loader instead of once up front.")
    prompt_max_length: int | None = Field(
        None,
        alias="promptMaxLength",
        ge=4,
        le=4096,
        description="Maximum tokens per caption after the prompt is applied; longer captions are truncated. "
        "Default: recommended for the base model (128 for RoBERTa, 77 for CLIP's text encoder). "
        "Cannot exceed the text encoder's position table.",
    )
    system_prompt: str | None = Field(None, alias="systemPrompt", description="Static text put before every caption.")
    prompt_template: str | None = Field(
        None,
        alias="promptTemplate",
        description="Template applied to every caption, with one {caption} placeholder, e.g. 'a photo of {caption}'.",
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule(
                    "self.indexOf('{caption}') >= 0 && self.indexOf('{caption}') == self.lastIndexOf('{caption}')",
                    "spec.dataset.promptTemplate must contain {caption} exactly once, for example 'a photo of {caption}'",
                )
            ]
        },
    )
    split_type: SplitType = Field(SplitType.RANDOM, alias="splitType", description="How images are split into training and validation sets.")
    train_split_ratio: float = Field(0.9, alias="trainSplitRatio", gt=0.0, lt=1.0, description="Fraction of images used for training.")
    validation_split_ratio: float = Field(
        0.1, alias="validationSplitRatio", gt=0.0, lt=1.0, description="Fraction of images used for validation. Sums to 1 with trainSplitRatio."
    )
    split_seed: int = Field(42, alias="splitSeed", ge=0, description="Seed of the random split; the same seed gives the same split.")
    skip_invalid_samples: bool = Field(
        False,
        alias="skipInvalidSamples",
        description="Skip invalid samples (missing or undecodable images, malformed lines) and report them, instead of failing the job.",
    )

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None and value.count("{caption}") != 1:
            raise ValueError(f"promptTemplate {value!r} must contain {{caption}} exactly once, for example 'a photo of {{caption}}'")
        return value

    @model_validator(mode="after")
    def _check_source_and_split(self) -> DatasetSpec:
        if (self.source is None) == (self.dataset_ref is None):
            raise ValueError("set exactly one of spec.dataset.source (an inline dataset) and spec.dataset.datasetRef (a registered ClipDataset)")
        if abs(self.train_split_ratio + self.validation_split_ratio - 1.0) > _SPLIT_SUM_TOLERANCE:
            raise ValueError(
                f"trainSplitRatio ({self.train_split_ratio}) and validationSplitRatio ({self.validation_split_ratio}) must sum to 1"
            )
        return self


class InfrastructureSpec(_ApiModel):
    """The cluster and GPU the trainer runs on. Ignored by laptop runs."""

    type: InfrastructureType = Field(
        InfrastructureType.MANAGED,
        description="Managed: the operator's own cluster and the GPU pools the platform team set up. BringYourOwn: a remote "
        "cluster reached through a kubeconfig Secret. Standalone: a cluster where kubeclip is installed on its own, whose "
        "operator runs jobs locally like Managed. Must match the type of the ClipCluster.",
    )
    cluster_ref: ClusterReference | None = Field(
        None,
        alias="clusterRef",
        description="The ClipCluster (cluster-scoped) to run in. Required for BringYourOwn; optional for Managed and Standalone, "
        "which default to the operator's default cluster (managed).",
    )
    gpu_type: GpuType = Field(alias="gpuType", description="GPU model of the node the trainer runs on: H100, A100 or L40. Matched exactly.")
    num_nodes: int = Field(
        1,
        alias="numNodes",
        description="Nodes for the trainer. Only 1 is supported.",
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule("self == 1", "distributed training is not supported, so spec.infrastructure.numNodes must be 1; set it to 1 or remove it")
            ]
        },
    )
    gpus_per_node: int = Field(
        1,
        alias="gpusPerNode",
        description="GPUs per node. Only 1 is supported.",
        json_schema_extra={
            CEL_RULES_KEY: [
                cel_rule("self == 1", "distributed training is not supported, so spec.infrastructure.gpusPerNode must be 1; set it to 1 or remove it")
            ]
        },
    )

    @field_validator("num_nodes", "gpus_per_node")
    @classmethod
    def _require_single_gpu(cls, value: int) -> int:
        if value != 1:
            raise ValueError("distributed training is not supported: kubeclip trains on exactly one node with one GPU; set 1")
        return value


class TrainingSpec(_ApiModel):
    """Hyperparameters of the training loop."""

    @field_validator("learning_rate", "weight_decay", "max_grad_norm", mode="before")
    @classmethod
    def _require_decimal_string(cls, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f'write the number as a quoted string, such as "{value}", so it keeps its exact value')
        if isinstance(value, str) and not re.match(DECIMAL_PATTERN, value):
            raise ValueError(f'{value!r} is not a positive decimal number; write it as "1e-5" or "0.00001"')
        return value

    torch_dtype: TorchDtype = Field(
        TorchDtype.BFLOAT16,
        alias="torchDtype",
        description="Compute precision. bfloat16 and float16 run autocast over float32 weights where the device supports them.",
    )
    epochs: int | None = Field(None, ge=1, le=10000, description="Passes over the training images. Default: recommended for the model (3).")
    max_steps: int | None = Field(None, alias="maxSteps", ge=1, description="Stop after this many optimizer steps even if epochs remain.")
    per_device_train_batch_size: int | None = Field(
        None, alias="perDeviceTrainBatchSize", ge=2, le=65536, description="Image-caption pairs per training step (at least 2 for a contrastive loss). Default 8."
    )
    per_device_eval_batch_size: int = Field(1, alias="perDeviceEvalBatchSize", ge=1, le=65536, description="Images or captions encoded at once during evaluation.")
    learning_rate: str | None = Field(
        None, alias="learningRate", pattern=DECIMAL_PATTERN, description="Peak learning rate as a decimal string, e.g. \"1e-5\". Default: recommended for the model."
    )
    weight_decay: str = Field("0.1", alias="weightDecay", pattern=DECIMAL_PATTERN, description="AdamW weight decay, not applied to biases, norms and the logit scale.")
    warmup_steps: int | None = Field(None, alias="warmupSteps", ge=0, description="Steps of linear warm-up. Default: 5% of all training steps.")
    lr_scheduler: LrScheduler = Field(LrScheduler.COSINE, alias="lrScheduler", description="Decay after warm-up: Cosine, Linear or Constant.")
    max_grad_norm: str = Field("1.0", alias="maxGradNorm", pattern=DECIMAL_PATTERN, description="Gradient clipping norm; \"0\" disables clipping.")
    save_steps: int = Field(100, alias="saveSteps", ge=1, description="Optimizer steps between checkpoints.")
    save_total_limit: int = Field(2, alias="saveTotalLimit", ge=1, description="Newest checkpoints kept.")
    eval_steps: int = Field(100, alias="evalSteps", ge=1, description="Optimizer steps between evaluations on the validation split.")
    logging_steps: int = Field(5, alias="loggingSteps", ge=1, description="Optimizer steps between progress logs and metric updates.")
    data_loader_workers: int = Field(1, alias="dataLoaderWorkers", ge=0, le=64, description="Data loader worker processes; 0 loads in the training process.")
    distributed: DistributedConfiguration = Field(
        DistributedConfiguration.SINGLE, description="Distributed configuration. Only Single (one GPU) is supported."
    )
    seed: int = Field(42, ge=0, description="Seed for initialisation, data order and caption sampling.")


class OutputSpec(_ApiModel):
    """The location of checkpoints and the final model."""

    storage_uri: str | None = Field(
        None,
        alias="storageUri",
        description="s3://bucket/prefix, gs://bucket/prefix, pvc://CLAIM/path, or a local directory for laptop runs. "
        "A retried run resumes from the newest complete checkpoint here.",
    )
    region: str | None = Field(None, description="S3 region of the output bucket.")
    secret_ref: LocalObjectReference | None = Field(None, alias="secretRef", description="Secret with the output store's credentials.")


class ClipTrainingJobSpec(_ApiModel):
    """The desired training run."""

    experiment_name: str | None = Field(None, alias="experimentName", description="Name of the experiment. Default: the resource name.")
    model: ModelSpec = Field(
        default_factory=ModelSpec,
        description="The dual encoder to fine-tune. Cannot be changed after the job is created.",
        json_schema_extra=_immutable_after_creation("spec.model", "delete the job and create it again to train another model"),
    )
    dataset: DatasetSpec = Field(
        description="The training data. Cannot be changed after the job is created.",
        json_schema_extra=_immutable_after_creation("spec.dataset", "delete the job and create it again to train on other data"),
    )
    infrastructure: InfrastructureSpec = Field(
        description="Where the trainer runs. Cannot be changed after the job is created.",
        json_schema_extra=_immutable_after_creation("spec.infrastructure", "delete the job and create it again to run elsewhere"),
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyperparameters.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where checkpoints and the final model go.")
    suspend: bool = Field(False, description="Stop the trainer and keep its checkpoints; setting it back to false resumes.")
    backoff_limit: int = Field(
        3,
        alias="backoffLimit",
        ge=0,
        le=20,
        description="Failed trainer attempts retried, each from the newest checkpoint, before the job fails. "
        "Settings or data errors fail at once; evictions and lost nodes do not count.",
    )


class ClipDatasetSpec(_ApiModel):
    """A dataset registered once and used by jobs through spec.dataset.datasetRef."""

    description: str | None = Field(None, description="What the dataset contains, for people browsing the cluster's datasets.")
    source: DatasetSource = Field(description="Location of the dataset archive and the credentials to read it.")
    type: DatasetType = Field(DatasetType.ZIP_JSONL, description="Layout of the archive. ZipJsonl: a ZIP of images plus one JSONL file of captions.")


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata a job file needs; other keys are kept but unused."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=63)
    namespace: str = "default"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid name: use lower-case letters, digits and '-', starting and ending with a letter or digit")
        return value


class ClipTrainingJob(BaseModel):
    """A ClipTrainingJob manifest, as applied with kubectl or passed to ``kubeclip train``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["kubeclip.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ClipTrainingJob"]
    metadata: ObjectMeta
    spec: ClipTrainingJobSpec
    status: dict[str, Any] | None = None


class ClipDataset(BaseModel):
    """A ClipDataset manifest: a dataset that jobs in the same namespace reference by name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["kubeclip.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ClipDataset"]
    metadata: ObjectMeta
    spec: ClipDatasetSpec
