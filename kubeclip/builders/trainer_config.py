"""Turn a ClipTrainingJob into the trainer's config.

The operator mounts the result into the trainer pod as JSON; ``kubeclip train`` hands
it to the trainer in process. Both go through ``build_trainer_config``, so a job file
trains the same way on a laptop and in a cluster.
"""

from __future__ import annotations

from kubeclip.api.job import ClipTrainingJob
from kubeclip.api.recommendations import ResolvedSettings
from kubeclip.trainer.config import (
    DataConfig,
    JobIdentity,
    ModelConfig,
    OptimizationConfig,
    OutputConfig,
    RuntimeConfig,
    ScheduleConfig,
    TrainerConfig,
)


def build_trainer_config(
    job: ClipTrainingJob,
    settings: ResolvedSettings,
    *,
    output_location: str,
    runtime: RuntimeConfig | None = None,
) -> TrainerConfig:
    """Build the trainer config of ``job``.

    Args:
        job: A validated job with an inline dataset source (a ``datasetRef`` must be
            resolved into ``spec.dataset.source`` first).
        settings: The job's resolved model-dependent settings.
        output_location: Directory or object-store prefix for checkpoints and the model.
        runtime: Process-level settings; defaults when None.

    Raises:
        ValueError: the job references a ClipDataset that was not resolved.
    """
    spec = job.spec
    if spec.dataset.source is None:
        raise ValueError(f"spec.dataset.datasetRef {spec.dataset.dataset_ref.name!r} must be resolved to a source before building the trainer config")
    return TrainerConfig(
        job=JobIdentity(namespace=job.metadata.namespace, name=job.metadata.name, experiment=spec.experiment_name or job.metadata.name),
        data=_build_data_config(job, settings),
        model=ModelConfig(
            vision_encoder=spec.model.vision_encoder,
            text_encoder=spec.model.base_model,
            preset=spec.model.preset.value if spec.model.preset else None,
            projection_dim=settings.projection_dim,
        ),
        optimization=_build_optimization_config(job, settings),
        schedule=ScheduleConfig(
            logging_steps=spec.training.logging_steps,
            eval_steps=spec.training.eval_steps,
            save_steps=spec.training.save_steps,
            save_total_limit=spec.training.save_total_limit,
        ),
        output=OutputConfig(location=output_location, region=spec.output.region),
        runtime=runtime or RuntimeConfig(),
    )


def _build_data_config(job: ClipTrainingJob, settings: ResolvedSettings) -> DataConfig:
    dataset = job.spec.dataset
    source = dataset.source
    assert source is not None  # checked by the caller
    return DataConfig(
        source=source.uri,
        region=source.region,
        profile=source.profile,
        lazy_tokenize=dataset.lazy_tokenize,
        prompt_max_length=settings.prompt_max_length,
        system_prompt=dataset.system_prompt,
        prompt_template=dataset.prompt_template,
        train_ratio=dataset.train_split_ratio,
        split_seed=dataset.split_seed,
        skip_invalid_samples=dataset.skip_invalid_samples,
        num_workers=job.spec.training.data_loader_workers,
    )


def _build_optimization_config(job: ClipTrainingJob, settings: ResolvedSettings) -> OptimizationConfig:
    training = job.spec.training
    return OptimizationConfig(
        epochs=settings.epochs,
        max_steps=training.max_steps,
        train_batch_size=settings.train_batch_size,
        eval_batch_size=training.per_device_eval_batch_size,
        learning_rate=float(settings.learning_rate),
        weight_decay=float(training.weight_decay),
        warmup_steps=settings.warmup_steps,
        lr_scheduler=training.lr_scheduler.value,
        max_grad_norm=float(training.max_grad_norm),
        torch_dtype=training.torch_dtype.value,
        seed=training.seed,
    )
