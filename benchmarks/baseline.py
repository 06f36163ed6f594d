"""The baseline: per-item preprocessing with transformers components, trained by ``transformers.Trainer``.

Every item reads its JPEG from one ZipFile opened in the main process, decodes it at
full size with Pillow, runs the transformers image processor, and tokenizes its
caption padded to MAX_CAPTION_TOKENS. The collate only stacks. It stands for the way
Hugging Face's contrastive-image-text example (run_clip.py) trains, as
docs/benchmarks.md describes it. It was written from that description, not from the
example's code, and needs no ``datasets``.
"""

from __future__ import annotations

import io
import tempfile
import zipfile

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from clocks import StepTimer, StepTiming, time_batches
from workload import ADAM_BETA2, ADAM_EPSILON, LEARNING_RATE, MAX_CAPTION_TOKENS, MAX_GRAD_NORM, WEIGHT_DECAY, Workload


class BaselinePairs(Dataset):
    """One (image, caption) pair per sample, preprocessed when the item is read."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        # One handle for the main process; safe only with dataloader_num_workers=0.
        self.archive = zipfile.ZipFile(workload.zip_path)

    def __len__(self) -> int:
        return len(self.workload.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.workload.samples[index]
        image = Image.open(io.BytesIO(self.archive.read(sample.image))).convert("RGB")
        pixel_values = self.workload.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        text = self.workload.tokenizer(
            self.workload.paired_caption(index),
            padding="max_length",
            max_length=MAX_CAPTION_TOKENS,
            truncation=True,
            return_tensors="pt",
        )
        return {"pixel_values": pixel_values, "input_ids": text["input_ids"][0], "attention_mask": text["attention_mask"][0]}


def stack_pairs(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor | bool]:
    """Stack the items' tensors and ask the model for its contrastive loss."""
    batch: dict[str, torch.Tensor | bool] = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    batch["return_loss"] = True
    return batch


class StepTimerCallback(TrainerCallback):
    """Feeds Trainer's step boundaries to a StepTimer.

    Trainer fetches the batch before ``on_step_begin``, so only the time between
    consecutive ``on_step_end`` calls covers a whole step including its data.
    """

    def __init__(self, timer: StepTimer) -> None:
        self.timer = timer

    def on_train_begin(self, args, state, control, **kwargs):
        self.timer.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.timer.step_ended()


def train(workload: Workload, dataset: BaselinePairs, *, batch_size: int, steps: int, warmup_steps: int, phases: bool) -> StepTiming:
    """Train a fresh model for ``steps`` Trainer steps and time the steps after warm-up."""
    model = workload.build_model()
    on_cuda = workload.device.type == "cuda"
    autocast_dtype = workload.precision.autocast_dtype
    timer = StepTimer(synchronize=on_cuda)
    with tempfile.TemporaryDirectory(prefix="baseline-trainer-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=batch_size,
            dataloader_num_workers=0,
            # kubeclip drops the last partial batch too, so every step has batch_size samples.
            dataloader_drop_last=True,
            max_steps=steps,
            learning_rate=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            adam_beta2=ADAM_BETA2,
            adam_epsilon=ADAM_EPSILON,
            max_grad_norm=MAX_GRAD_NORM,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            remove_unused_columns=False,
            bf16=autocast_dtype == torch.bfloat16,
            fp16=autocast_dtype == torch.float16,
            use_cpu=not on_cuda,
            seed=workload.seed,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=stack_pairs, callbacks=[StepTimerCallback(timer)])
        # With tqdm disabled, Trainer prints its end-of-training metrics through this callback.
        trainer.remove_callback(PrinterCallback)
        if phases:
            timer.attach(model)
        try:
            trainer.train()
        finally:
            timer.detach()
    return timer.timing(warmup_steps, batch_size)


def build_data_loader(workload: Workload, dataset: BaselinePairs, batch_size: int) -> DataLoader:
    """Build a DataLoader with the settings Trainer gives its training loader in this benchmark.

    It leaves out accelerate's wrapper, which moves batches to the device, so both
    sides' loading figures cover host-side work only.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(workload.seed)),
        num_workers=0,
        collate_fn=stack_pairs,
        pin_memory=workload.device.type == "cuda",
        drop_last=True,
    )


def load_batches(workload: Workload, dataset: BaselinePairs, *, batch_size: int, batches: int, warmup_batches: int) -> float:
    """Iterate the loader alone, with no model, and return samples per second after warm-up."""
    loader = build_data_loader(workload, dataset, batch_size)
    return time_batches(loader, batches=batches, warmup_batches=warmup_batches, batch_size=batch_size)
