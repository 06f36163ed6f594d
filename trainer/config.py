"""The trainer's one typed config: what to train, on which data, and where to write it.

The operator's builder (or ``kubeclip train`` on a laptop) resolves a
``ClipTrainingJob`` spec into a ``TrainerConfig`` and either mounts it as a JSON file
or hands it over in process. The trainer validates it once with ``validate`` before
any model or GPU work and never mutates it afterwards. Every value here is already
resolved: no field depends on another one or on a recommendation table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

from kubeclip.trainer.errors import ConfigError

TorchDtype = Literal["bfloat16", "float16", "float32"]
LrScheduler = Literal["Cosine", "Linear", "Constant"]
ModelPreset = Literal["Small"]

CAPTION_PLACEHOLDER = "{caption}"


@dataclasses.dataclass(frozen=True)
class JobIdentity:
    """The identity of this run, carried into every log line and the model card."""

    #: Kubernetes namespace of the ClipTrainingJob, or "local" for laptop runs.
    namespace: str = "local"
    #: Name of the ClipTrainingJob.
    name: str = "clip-job"
    #: Experiment name; defaults to the job name in the API.
    experiment: str = "clip-job"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The dataset ZIP's location and how captions become token ids."""

    #: Local path, ``s3://``, ``gs://``, ``http(s)://`` or ``builtin://`` location of the ZIP.
    source: str
    #: S3 region of the source bucket; None lets boto3 decide.
    region: str | None = None
    #: Named AWS profile for laptop runs; None uses the default credential chain.
    profile: str | None = None
    #: Tokenize in the data loader instead of once up front (saves memory on large sets).
    lazy_tokenize: bool = False
    #: Tokens per caption after the prompt is applied; longer captions are truncated.
    prompt_max_length: int = 128
    #: Static text put before every caption, or None.
    system_prompt: str | None = None
    #: Template with one ``{caption}`` placeholder, such as "a photo of {caption}", or None.
    prompt_template: str | None = None
    #: Fraction of images used for training; the rest form the validation split.
    train_ratio: float = 0.9
    #: Seed of the random train/validation split, so a retried run splits the same way.
    split_seed: int = 42
    #: Drop invalid samples (and report them) instead of failing the run.
    skip_invalid_samples: bool = False
    #: Images above this many pixels are rejected as possible decompression bombs.
    max_image_pixels: int = 89_478_485
    #: Data loader worker processes; 0 loads in the training process.
    num_workers: int = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The encoders that form the dual encoder."""

    #: Hugging Face id, local directory or object-store directory of the vision encoder.
    vision_encoder: str = "openai/clip-vit-base-patch32"
    #: Hugging Face id, local directory or object-store directory of the text encoder.
    text_encoder: str = "FacebookAI/roberta-base"
    #: "Small" builds small randomly initialised encoders of the same architectures
    #: (CLIP vision and RoBERTa text) and a tokenizer trained on the training captions,
    #: so a run needs no download. None loads the pretrained encoders.
    preset: ModelPreset | None = None
    #: Size of the shared embedding space the two projections map into.
    projection_dim: int = 512


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """The training loop's schedule, optimizer and precision."""

    epochs: int = 3
    #: Stop after this many optimizer steps even if epochs remain; None trains all epochs.
    max_steps: int | None = None
    train_batch_size: int = 8
    eval_batch_size: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.1
    #: Steps of linear warm-up from 0 to the learning rate; None means 5% of all steps.
    warmup_steps: int | None = None
    lr_scheduler: LrScheduler = "Cosine"
    #: Gradients are clipped to this global L2 norm; 0 disables clipping.
    max_grad_norm: float = 1.0
    torch_dtype: TorchDtype = "bfloat16"
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How often the loop logs, evaluates and saves, in optimizer steps."""

    logging_steps: int = 5
    eval_steps: int = 100
    save_steps: int = 100
    #: Newest checkpoints kept; older ones are deleted after a new one is complete.
    save_total_limit: int = 2
    #: Evaluate once before the first step, as a baseline for the curves.
    eval_before_training: bool = True


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """The location of checkpoints, the final model, metrics and plots."""

    #: Local directory, or an ``s3://`` / ``gs://`` prefix.
    location: str
    #: S3 region of the output bucket; None lets boto3 decide.
    region: str | None = None
    profile: str | None = None


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Process-level settings that do not change what is trained."""

    #: TCP port of the Prometheus metrics endpoint; 0 disables it.
    metrics_port: int = 9400
    #: Address the metrics endpoint binds to.
    metrics_address: str = "0.0.0.0"
    #: Directory for downloaded datasets and models.
    cache_dir: str = "~/.cache/kubeclip"
    #: "auto" picks CUDA when available, else CPU.
    device: str = "auto"
    #: Show a progress bar when stderr is a terminal.
    progress_bar: bool = True


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Everything one training run needs; built by ``kubeclip.builders`` from a job spec."""

    data: DataConfig
    output: OutputConfig
    job: JobIdentity = dataclasses.field(default_factory=JobIdentity)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainerConfig:
        """Build a config from ``to_dict`` output; unknown keys raise ConfigError."""
        sections = {field.name: field.type for field in dataclasses.fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"unknown trainer config sections {sorted(unknown)}; expected {sorted(sections)}")
        kwargs = {name: _build_section(name, raw[name]) for name in raw}
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: Path) -> TrainerConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read trainer config {path}: {err}") from err
        return cls.from_dict(raw)


_SECTION_TYPES: dict[str, type] = {
    "data": DataConfig,
    "output": OutputConfig,
    "job": JobIdentity,
    "model": ModelConfig,
    "optimization": OptimizationConfig,
    "schedule": ScheduleConfig,
    "runtime": RuntimeConfig,
}


def _build_section(name: str, values: dict[str, Any]) -> Any:
    section_type = _SECTION_TYPES[name]
    known = {field.name for field in dataclasses.fields(section_type)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in trainer config section {name!r}; expected {sorted(known)}")
    return section_type(**values)


def validate(config: TrainerConfig) -> None:
    """Check the values no type annotation can; raise ConfigError naming the first bad one."""
    _check_data(config.data)
    _check_optimization(config.optimization)
    _check_schedule(config.schedule)
    if not 0 <= config.runtime.metrics_port <= 65535:
        raise ConfigError(f"metrics port must be between 0 (off) and 65535, got {config.runtime.metrics_port}")
    if config.runtime.device != "auto" and config.runtime.device.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {config.runtime.device!r}")
    if config.model.projection_dim < 1:
        raise ConfigError(f"model projection_dim must be at least 1, got {config.model.projection_dim}")


def _check_data(data: DataConfig) -> None:
    if not 0.0 < data.train_ratio < 1.0:
        raise ConfigError(f"train split ratio must be between 0 and 1 (exclusive), got {data.train_ratio}")
    if data.prompt_max_length < 4:
        raise ConfigError(f"prompt max length must be at least 4 tokens, got {data.prompt_max_length}")
    if data.prompt_template is not None and data.prompt_template.count(CAPTION_PLACEHOLDER) != 1:
        raise ConfigError(
            f"prompt template {data.prompt_template!r} must contain {CAPTION_PLACEHOLDER} exactly once, "
            "for example 'a photo of {caption}'"
        )
    if data.num_workers < 0:
        raise ConfigError(f"data loader workers must be 0 or more, got {data.num_workers}")


def _check_optimization(opt: OptimizationConfig) -> None:
    for name in ("epochs", "train_batch_size", "eval_batch_size"):
        if getattr(opt, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(opt, name)}")
    if opt.max_steps is not None and opt.max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1 when set, got {opt.max_steps}")
    if not (math.isfinite(opt.learning_rate) and opt.learning_rate > 0):
        raise ConfigError(f"learning rate must be a positive number, got {opt.learning_rate}")
    if opt.weight_decay < 0 or opt.max_grad_norm < 0 or (opt.warmup_steps or 0) < 0:
        raise ConfigError("weight decay, max gradient norm and warm-up steps must not be negative")


def _check_schedule(schedule: ScheduleConfig) -> None:
    for name in ("logging_steps", "eval_steps", "save_steps", "save_total_limit"):
        if getattr(schedule, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(schedule, name)}")
