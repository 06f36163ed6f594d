"""kubeclip's side of the benchmark: its own data pipeline and training loop, wired as ``run.py`` wires them.

Captions are tokenized once before training (eager tokenization), images are decoded
in loader workers that open their own archive handle, JPEGs are decoded at reduced
size, and each batch is padded to its longest caption.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader

from kubeclip.trainer.checkpoint import TrainingPosition
from kubeclip.trainer.config import OptimizationConfig
from kubeclip.trainer.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageTransform
from kubeclip.trainer.data.loading import (
    ArchiveReader,
    CaptionSource,
    CollatePairs,
    EpochSampler,
    ImageLoader,
    TrainingPairs,
    build_loader,
)
from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat, tokenize_eagerly
from kubeclip.trainer.loop import EpochHooks, StepContext, build_optimizer, build_scheduler, train_one_epoch

from clocks import StepTimer, StepTiming, time_batches
from workload import LEARNING_RATE, MAX_CAPTION_TOKENS, MAX_GRAD_NORM, WEIGHT_DECAY, Workload


@dataclasses.dataclass
class KubeclipData:
    """The training dataset, built once per benchmark run and shared by every measurement."""

    pairs: TrainingPairs
    pad_token_id: int
    #: Seconds eager tokenization of every caption took, a one-time cost before training.
    tokenize_seconds: float


def build_data(workload: Workload) -> KubeclipData:
    caption_tokenizer = CaptionTokenizer(workload.tokenizer, PromptFormat(), MAX_CAPTION_TOKENS)
    started = time.perf_counter()
    # No cache folder, so every run tokenizes and nothing is written to disk.
    table = tokenize_eagerly(caption_tokenizer, workload.captions, cache_dir=None)
    tokenize_seconds = time.perf_counter() - started
    transform = ImageTransform.from_image_processor(workload.image_processor)
    images = ImageLoader(ArchiveReader(workload.zip_path), transform, DEFAULT_MAX_IMAGE_PIXELS)
    captions = CaptionSource(workload.samples, caption_tokenizer, table)
    pairs = TrainingPairs(workload.samples, images, captions, workload.seed)
    return KubeclipData(pairs, caption_tokenizer.pad_token_id, tokenize_seconds)


def build_data_loader(workload: Workload, data: KubeclipData, *, batch_size: int, workers: int) -> tuple[DataLoader, Callable[[int], None]]:
    """Return the training loader and a function that moves dataset and sampler to an epoch."""
    sampler = EpochSampler(len(data.pairs), workload.seed)
    loader = build_loader(data.pairs, batch_size=batch_size, num_workers=workers, collate=CollatePairs(data.pad_token_id), sampler=sampler, drop_last=True)

    def start_epoch(epoch: int) -> None:
        data.pairs.set_epoch(epoch)
        sampler.set_position(epoch, 0)

    return loader, start_epoch


def train(
    workload: Workload,
    data: KubeclipData,
    *,
    batch_size: int,
    workers: int,
    steps: int,
    warmup_steps: int,
    phases: bool,
    profiler: torch.profiler.profile | None = None,
) -> StepTiming:
    """Train a fresh model for ``steps`` steps with ``train_one_epoch`` and time the steps after warm-up.

    ``profiler``, when given, is stepped after every training step, so its schedule
    decides which steps it records.
    """
    model = workload.build_model()
    optimization = OptimizationConfig(
        max_steps=steps,
        train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        torch_dtype="bfloat16",
        seed=workload.seed,
    )
    optimizer = build_optimizer(model, optimization)
    scheduler = build_scheduler(optimizer, optimization, steps)
    device = workload.device
    scaler = torch.amp.GradScaler(device.type, enabled=workload.precision.autocast_dtype == torch.float16)
    context = StepContext(model, optimizer, scheduler, scaler, device, workload.precision.autocast(device), MAX_GRAD_NORM)
    loader, start_epoch = build_data_loader(workload, data, batch_size=batch_size, workers=workers)
    timer = StepTimer(synchronize=device.type == "cuda")

    def after_step(_position: TrainingPosition, _loss: float) -> None:
        timer.step_ended()
        if profiler is not None:
            profiler.step()

    hooks = EpochHooks(after_step=after_step, should_stop=lambda current: current.step >= steps)
    position = TrainingPosition()
    if phases:
        timer.attach(model)
    timer.start()
    try:
        # The epoch loop of run.py: a new loader iterator (and new workers) per epoch.
        while position.step < steps:
            start_epoch(position.epoch)
            if train_one_epoch(context, loader, position, batch_size, hooks):
                position.epoch += 1
                position.epoch_sample_index = 0
    finally:
        timer.detach()
    return timer.timing(warmup_steps, batch_size)


def load_batches(workload: Workload, data: KubeclipData, *, batch_size: int, workers: int, batches: int, warmup_batches: int) -> float:
    """Iterate the loader alone, with no model, and return samples per second after warm-up."""
    loader, start_epoch = build_data_loader(workload, data, batch_size=batch_size, workers=workers)
    return time_batches(loader, batches=batches, warmup_batches=warmup_batches, batch_size=batch_size, start_epoch=start_epoch)
