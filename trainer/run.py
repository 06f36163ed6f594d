"""One training run from config to verified model, as a flat sequence of steps.

Called by ``kubeclip train`` (in process) and by the trainer entry point in a pod
(``python -m kubeclip.trainer --config FILE``). Each numbered step below is a
paragraph; the helpers it calls live in the data, model, loop, evaluation,
checkpoint, reporting and export modules.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from transformers.utils import logging as transformers_logging

from kubeclip.trainer import config as config_module
from kubeclip.trainer.checkpoint import CheckpointStore, TrainingPosition
from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.data.images import ImageTransform
from kubeclip.trainer.data.loading import (
    ArchiveReader,
    CaptionSource,
    CollatePairs,
    EpochSampler,
    ImageLoader,
    TrainingPairs,
    build_loader,
)
from kubeclip.trainer.data.sources import fetch_dataset
from kubeclip.trainer.data.split import split_by_image
from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat, tokenize_eagerly
from kubeclip.trainer.data.validation import validate_archive
from kubeclip.trainer.errors import ConfigError, DatasetError, TrainingInterrupted
from kubeclip.trainer.evaluation import EvaluationSet, SplitEmbeddings, embed_split, score_embeddings
from kubeclip.trainer.export import publish_outputs, save_final_model, verify_saved_model, write_json, write_model_card
from kubeclip.trainer.loop import (
    EpochHooks,
    StepContext,
    StopSignal,
    build_optimizer,
    build_scheduler,
    choose_precision,
    resolve_warmup_steps,
    train_one_epoch,
)
from kubeclip.trainer.metrics import TrainerMetrics, serve_metrics
from kubeclip.trainer.outputs import apply_current_hyperparameters, exclusive_output
from kubeclip.trainer.model import build_dual_encoder, count_parameters
from kubeclip.trainer.plots import plot_training_curves
from kubeclip.trainer.reporting import ProgressBar, Reporter, ReportSink
from kubeclip.trainer.storage import paths

logger = logging.getLogger(__name__)

# Fast tokenizers warn (and may deadlock) when a process that used their thread pool
# forks data loader workers; tokenization here is single-threaded anyway.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Training-split figures are computed on at most this many images, so evaluation
# time stays proportional to the validation split's.
_MAX_TRAIN_EVAL_IMAGES = 1000


@dataclasses.dataclass
class RunResult:
    """The output folder, the final model's location and the figures of the summary."""

    output_dir: Path
    model_location: str
    figures: dict[str, Any]


def run_training(config: TrainerConfig, *, registry: CollectorRegistry | None = None, sinks: Sequence[ReportSink] = ()) -> RunResult:
    """Train, evaluate, save and verify the model described by ``config``.

    ``sinks`` receive every figure the Reporter records (the pod's progress report);
    the caller reports the run's end to them, because only the caller catches the exception that ends it.

    Raises:
        ConfigError, DatasetError, StorageError: invalid input; nothing was trained.
        TrainingInterrupted: a stop signal arrived; a checkpoint contains the progress
            made in the training loop (none if it arrived before the loop).
        TrainerError: training failed (for example, the loss diverged).
    """
    config_module.validate(config)
    cache_dir = Path(config.runtime.cache_dir).expanduser()
    staging = _staging_dir(config, cache_dir)
    device = _choose_device(config.runtime.device)
    stop = StopSignal()
    stop.install()
    server = None
    try:
        with exclusive_output(staging):
            # The metrics endpoint starts first, so a busy port fails before any download.
            metrics = TrainerMetrics(registry or CollectorRegistry(), with_gpu=device.type == "cuda")
            server = serve_metrics(metrics.registry, config.runtime.metrics_port, config.runtime.metrics_address)
            return _run(config, cache_dir, staging, device, stop, metrics, sinks)
    finally:
        stop.uninstall()
        if server is not None:
            server.shutdown()


def _run(config: TrainerConfig, cache_dir: Path, staging: Path, device: torch.device, stop: StopSignal, metrics: TrainerMetrics, sinks: Sequence[ReportSink]) -> RunResult:
    started = time.monotonic()

    # 1. Record the config in the output folder and seed every generator.
    transformers_logging.disable_progress_bar()  # its bars would interleave with the structured log
    write_json(staging / "trainer_config.json", config.to_dict())
    _seed_everything(config.optimization.seed)

    # 2. Get the dataset and validate all of it before any model work.
    zip_path = fetch_dataset(config.data, cache_dir)
    report = validate_archive(zip_path, decode_images=True, max_image_pixels=config.data.max_image_pixels)
    _handle_problems(report, config, staging)
    train_samples, validation_samples = split_by_image(report.samples, train_ratio=config.data.train_ratio, seed=config.data.split_seed)
    logger.info("dataset ready", extra={"train_images": len(train_samples), "validation_images": len(validation_samples), "archive": str(zip_path)})
    _stop_if_requested(stop)

    # 3. Build the model and the preprocessing that belongs to it.
    prompt = PromptFormat(config.data.system_prompt, config.data.prompt_template)
    training_texts = [prompt.apply(caption) for sample in train_samples for caption in sample.captions]
    bundle = build_dual_encoder(config.model, prompt_max_length=config.data.prompt_max_length, cache_dir=cache_dir, training_texts=training_texts)
    model = bundle.model.to(device)
    precision = choose_precision(config.optimization.torch_dtype, device)
    logger.info("model ready", extra={"parameters": count_parameters(model), "device": str(device), "precision": precision.description})

    # 4. Tokenize and build the data pipeline.
    tokenizer = CaptionTokenizer(bundle.tokenizer, prompt, config.data.prompt_max_length)
    _check_prompt_leaves_room(tokenizer)
    images = ImageLoader(ArchiveReader(zip_path), ImageTransform.from_image_processor(bundle.image_processor), config.data.max_image_pixels)
    train_captions = _caption_source(train_samples, tokenizer, config, cache_dir)
    train_pairs = TrainingPairs(train_samples, images, train_captions, config.optimization.seed)
    sampler = EpochSampler(len(train_pairs), config.optimization.seed)
    batch_size = _check_batch_size(config.optimization.train_batch_size, len(train_samples))
    loader = build_loader(train_pairs, batch_size=batch_size, num_workers=config.data.num_workers, collate=CollatePairs(tokenizer.pad_token_id), sampler=sampler, drop_last=True)
    eval_sets = _evaluation_sets(train_samples, validation_samples, images, tokenizer, config, cache_dir)

    # 5. Optimizer, schedule and the length of the run.
    steps_per_epoch = len(train_samples) // batch_size
    total_steps = steps_per_epoch * config.optimization.epochs
    if config.optimization.max_steps is not None:
        total_steps = min(total_steps, config.optimization.max_steps)
    optimizer = build_optimizer(model, config.optimization)
    scheduler = build_scheduler(optimizer, config.optimization, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.autocast_dtype == torch.float16)
    context = StepContext(model, optimizer, scheduler, scaler, device, precision.autocast(device), config.optimization.max_grad_norm)

    # 6. Reporter, and the checkpoint to resume from, if any.
    _stop_if_requested(stop)
    reporter = Reporter(metrics, staging / "metrics.jsonl", total_steps=total_steps, steps_per_epoch=steps_per_epoch, sinks=sinks)
    checkpoints = CheckpointStore(config.output, staging, config.schedule.save_total_limit)
    checkpoints.remove_partial_saves()
    position = TrainingPosition()
    resumed = checkpoints.load_latest(model=model, optimizer=optimizer, scheduler=scheduler, device=device)
    if resumed is not None:
        position = resumed.position
        reporter.restore(resumed.history, resumed_checkpoint=resumed.name)
        apply_current_hyperparameters(optimizer, scheduler, config, resumed.config)
    else:
        reporter.restore([])
    logger.info(
        "training plan",
        extra={
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "warmup_steps": resolve_warmup_steps(config.optimization, total_steps),
            "resumed_from_step": position.step,
        },
    )

    def evaluate(split_names: tuple[str, ...]) -> tuple[dict[str, dict[str, float]], dict[str, SplitEmbeddings]]:
        results, embeddings = {}, {}
        for name in split_names:
            embeddings[name] = embed_split(model, eval_sets[name], batch_size=config.optimization.eval_batch_size, num_workers=0, device=device, autocast=context.autocast)
            results[name] = score_embeddings(embeddings[name], model.logit_scale.item(), config.optimization.seed)
            reporter.log_evaluation(step=position.step, epoch=position.epoch, split=name, results=results[name])
        return results, embeddings

    def save_checkpoint() -> None:
        save_started = time.monotonic()
        name = checkpoints.save(model=model, optimizer=optimizer, scheduler=scheduler, position=position, history=reporter.history, config=config.to_dict())
        reporter.log_checkpoint(step=position.step, name=name, seconds=time.monotonic() - save_started)

    # 7. Baseline evaluation, so the curves start at the untrained model.
    if position.step == 0 and config.schedule.eval_before_training:
        evaluate(("validation", "train"))

    # 8. Train epoch by epoch, stopping at the step limit or on a stop signal.
    _stop_if_requested(stop)
    bar = ProgressBar(config.runtime.progress_bar, total_steps, position.step)
    schedule = config.schedule

    def after_step(current: TrainingPosition, loss: float) -> None:
        reporter.record_step(step=current.step, samples=batch_size, loss=loss, learning_rate=scheduler.get_last_lr()[0], logit_scale=model.logit_scale.exp().item())
        bar.update(loss)
        if current.step % schedule.logging_steps == 0:
            reporter.log_progress(step=current.step, epoch=current.epoch, learning_rate=scheduler.get_last_lr()[0])
            reporter.record_gpu(device)
        if current.step % schedule.eval_steps == 0 and current.step < total_steps:
            evaluate(("validation", "train"))
        if current.step % schedule.save_steps == 0 or stop.received is not None:
            save_checkpoint()

    hooks = EpochHooks(after_step=after_step, should_stop=lambda current: current.step >= total_steps or stop.received is not None)
    try:
        while position.step < total_steps and stop.received is None:
            train_pairs.set_epoch(position.epoch)
            sampler.set_position(position.epoch, position.epoch_sample_index)
            if train_one_epoch(context, loader, position, batch_size, hooks):
                position.epoch += 1
                position.epoch_sample_index = 0
        if stop.received is not None:
            raise TrainingInterrupted(f"stopped by signal {stop.received} at step {position.step}; the next run resumes from the checkpoint saved there")
    finally:
        bar.close()

    # 9. Final evaluation and checkpoint, then the model in Hugging Face format.
    final, final_embeddings = evaluate(("validation", "train"))
    if position.step % schedule.save_steps != 0:
        save_checkpoint()
    model_dir = staging / "model"
    weights_sha256 = save_final_model(model, bundle.tokenizer, bundle.image_processor, model_dir)

    # 10. Reload the saved model as a user would and check it against the final embeddings.
    check = verify_saved_model(model_dir, final_embeddings["validation"], eval_sets["validation"], device=device, autocast=context.autocast, batch_size=config.optimization.eval_batch_size)

    # 11. Model card, plot, summary, and the upload to an object-store output.
    figures = _summarize(reporter.history, final, check, position, precision.description, train_samples, validation_samples, time.monotonic() - started, report)
    write_model_card(model_dir, config, figures, weights_sha256)
    plot_training_curves(reporter.history, staging / "training_curves.png", f"{config.job.experiment}: {position.step} steps")
    write_json(staging / "summary.json", figures | {"weights_sha256": weights_sha256})
    model_location = publish_outputs(staging, config)
    logger.info("training finished", extra={"model": model_location, "steps": position.step, "seconds": round(time.monotonic() - started, 1)})
    return RunResult(staging, model_location, figures | {"model_location": model_location})


def _stop_if_requested(stop: StopSignal) -> None:
    """Raise TrainingInterrupted if a stop signal arrived while the run was still setting up."""
    if stop.received is not None:
        raise TrainingInterrupted(f"stopped by signal {stop.received} before training started; nothing was saved")


def _check_prompt_leaves_room(tokenizer: CaptionTokenizer) -> None:
    """Reject a system prompt and template that fill the token budget before the caption starts."""
    prompt_only = tokenizer.count_tokens([""])[0]
    if prompt_only >= tokenizer.max_length - 1:
        raise ConfigError(
            f"the system prompt and prompt template alone take {prompt_only} tokens, and the prompt max length is "
            f"{tokenizer.max_length}, so every caption would be cut off; shorten spec.dataset.systemPrompt or raise "
            "spec.dataset.promptMaxLength"
        )


def _staging_dir(config: TrainerConfig, cache_dir: Path) -> Path:
    """Return the output folder itself for local outputs, else a local folder that is uploaded."""
    if paths.is_local(config.output.location):
        return paths.local_path(config.output.location)
    return cache_dir / "runs" / f"{config.job.namespace}-{config.job.name}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _choose_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was requested, but CUDA is not available here; use --device cpu or auto")
    return torch.device(requested)


def _handle_problems(report, config: TrainerConfig, staging: Path) -> None:
    """Fail on invalid samples unless skipping was requested; then write what was skipped."""
    for problem in report.warnings:
        logger.warning("dataset warning", extra={"problem": str(problem)})
    if report.is_valid:
        return
    report.raise_if_invalid(skip_invalid=config.data.skip_invalid_samples)
    listing = "\n".join(str(problem) for problem in report.problems)
    (staging / "skipped_samples.txt").write_text(f"{report.summary()}\n\n{listing}\n", encoding="utf-8")
    logger.warning("skipping invalid samples", extra={"errors": len(report.errors), "valid_samples": len(report.samples), "report": str(staging / "skipped_samples.txt")})


def _caption_source(samples, tokenizer: CaptionTokenizer, config: TrainerConfig, cache_dir: Path) -> CaptionSource:
    if config.data.lazy_tokenize:
        return CaptionSource(samples, tokenizer, None)
    captions = [caption for sample in samples for caption in sample.captions]
    return CaptionSource(samples, tokenizer, tokenize_eagerly(tokenizer, captions, cache_dir / "tokens"))


def _evaluation_sets(train_samples, validation_samples, images: ImageLoader, tokenizer: CaptionTokenizer, config: TrainerConfig, cache_dir: Path) -> dict[str, EvaluationSet]:
    count = min(len(train_samples), max(len(validation_samples), 1), _MAX_TRAIN_EVAL_IMAGES)
    stride = len(train_samples) / count
    train_subset = [train_samples[int(index * stride)] for index in range(count)]
    seed = config.optimization.seed
    return {
        "validation": EvaluationSet("validation", validation_samples, images, _caption_source(validation_samples, tokenizer, config, cache_dir), seed),
        "train": EvaluationSet("train", train_subset, images, _caption_source(train_subset, tokenizer, config, cache_dir), seed),
    }


def _check_batch_size(batch_size: int, train_images: int) -> int:
    if batch_size > train_images:
        raise DatasetError(
            f"the training split has {train_images} images, fewer than the batch size {batch_size}; "
            f"set spec.training.perDeviceTrainBatchSize to {train_images} or less, or add images"
        )
    return batch_size


def _summarize(history, final, check, position: TrainingPosition, precision: str, train_samples, validation_samples, seconds: float, report) -> dict[str, Any]:
    baseline = next((entry for entry in history if entry["kind"] == "eval" and entry["split"] == "validation" and entry["step"] == 0), None)
    baseline_train = next((entry for entry in history if entry["kind"] == "eval" and entry["split"] == "train" and entry["step"] == 0), None)
    return {
        "steps": position.step,
        "epochs_completed": round(position.samples_seen / max(len(train_samples), 1), 2),
        "samples_seen": position.samples_seen,
        "train_images": len(train_samples),
        "validation_images": len(validation_samples),
        "skipped_lines": report.invalid_line_count,
        "precision": precision,
        "seconds": round(seconds, 1),
        "baseline_validation": baseline,
        "baseline_train": baseline_train,
        "final_validation": final["validation"],
        "final_train": final["train"],
        "final_model_check": check,
    }
