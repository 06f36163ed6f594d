"""The setup both sides of the throughput benchmark share: data, tokenizer, image processor, model.

Both sides read the same validated samples from the same ZIP and use the same
trained tokenizer and image processor. They start from identical weights, because
the model is built from a config after seeding torch. So the only differences are
in how each side loads data and runs its steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)

from kubeclip.trainer import presets
from kubeclip.trainer.data.loading import choose_caption
from kubeclip.trainer.data.validation import Sample, validate_archive
from kubeclip.trainer.loop import Precision, choose_precision

#: Tokens per caption after truncation, for both sides. The baseline pads every caption to it.
MAX_CAPTION_TOKENS = 128
#: kubeclip's default peak learning rate (OptimizationConfig.learning_rate), used by both sides.
LEARNING_RATE = 1e-5
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
#: kubeclip's AdamW settings (loop.build_optimizer); the baseline's TrainingArguments get the same.
ADAM_BETA2 = 0.98
ADAM_EPSILON = 1e-6

MODEL_CHOICES = ("small", "base")


@dataclasses.dataclass(frozen=True)
class Workload:
    """Everything both sides need to build their data pipelines and models."""

    zip_path: Path
    samples: tuple[Sample, ...]
    #: Index of the caption paired with each sample: the one kubeclip draws in epoch 0.
    caption_indices: tuple[int, ...]
    tokenizer: PreTrainedTokenizerFast
    image_processor: CLIPImageProcessor
    model_name: str
    model_config: VisionTextDualEncoderConfig
    device: torch.device
    precision: Precision
    seed: int
    #: Seconds spent validating the archive and training the tokenizer, shared setup cost.
    setup_seconds: float

    @property
    def captions(self) -> list[str]:
        """All captions of all samples, in sample order, as kubeclip's eager tokenization takes them."""
        return [caption for sample in self.samples for caption in sample.captions]

    def paired_caption(self, sample_index: int) -> str:
        return self.samples[sample_index].captions[self.caption_indices[sample_index]]

    def build_model(self) -> VisionTextDualEncoderModel:
        """Build a randomly initialised model; every call returns identical weights."""
        torch.manual_seed(self.seed)
        model = VisionTextDualEncoderModel(config=self.model_config)
        return model.to(self.device)


def build_workload(zip_path: Path, model_name: str, seed: int) -> Workload:
    """Validate the archive, train the tokenizer on its captions and build the model config.

    Raises:
        ValueError: ``model_name`` is not one of MODEL_CHOICES.
        kubeclip.trainer.errors.DatasetError: the archive is missing or invalid.
    """
    started = time.perf_counter()
    report = validate_archive(zip_path, decode_images=True)
    report.raise_if_invalid()
    samples = report.samples
    caption_indices = tuple(choose_caption(seed, 0, index, len(sample.captions)) for index, sample in enumerate(samples))
    captions = [caption for sample in samples for caption in sample.captions]
    tokenizer = presets.train_small_tokenizer(captions, MAX_CAPTION_TOKENS)
    model_config, image_processor = _model_config(model_name, len(tokenizer))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Workload(
        zip_path=zip_path,
        samples=samples,
        caption_indices=caption_indices,
        tokenizer=tokenizer,
        image_processor=image_processor,
        model_name=model_name,
        model_config=model_config,
        device=device,
        precision=choose_precision("bfloat16", device),
        seed=seed,
        setup_seconds=time.perf_counter() - started,
    )


def _model_config(model_name: str, vocab_size: int) -> tuple[VisionTextDualEncoderConfig, CLIPImageProcessor]:
    if model_name == "small":
        vision = presets.build_small_vision_config()
        text = presets.build_small_text_config(vocab_size, MAX_CAPTION_TOKENS)
        config = VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=128)
        return config, presets.build_small_image_processor()
    if model_name == "base":
        # ViT-B/32 and roberta-base sizes from the default configs, randomly initialised.
        # Only the vocabulary is shrunk to the trained tokenizer's, because its ids never
        # reach the other rows of roberta-base's 50265-row embedding.
        text = RobertaConfig(vocab_size=vocab_size, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        config = VisionTextDualEncoderConfig.from_vision_text_configs(CLIPVisionConfig(), text, projection_dim=512)
        return config, CLIPImageProcessor()
    raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_CHOICES)}")
