"""Build the dual encoder, its tokenizer and its image processor from the model config.

Called once by the training loop. Pretrained encoders load from a Hugging Face id, a
local directory, or an ``s3://`` / ``gs://`` directory (downloaded to the cache
first). The Small preset builds them from configs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)

from kubeclip.trainer import presets
from kubeclip.trainer.config import ModelConfig
from kubeclip.trainer.errors import ConfigError
from kubeclip.trainer.storage import remote
from kubeclip.trainer.storage.uri import parse_location

logger = logging.getLogger(__name__)

# Text encoders that number positions from pad_token_id + 1, so their usable length
# is max_position_embeddings - pad_token_id - 1 (514 - 2 = 512 for roberta-base).
_OFFSET_POSITION_MODELS = {"roberta", "xlm-roberta", "camembert", "longformer"}


@dataclasses.dataclass
class DualEncoderBundle:
    """The model and the preprocessing that belongs to it."""

    model: VisionTextDualEncoderModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: object


def build_dual_encoder(config: ModelConfig, *, prompt_max_length: int, cache_dir: Path, training_texts: Iterable[str]) -> DualEncoderBundle:
    """Build the model named by ``config``.

    Args:
        training_texts: Prompts of the training captions; only the Small preset reads
            them, to train its tokenizer.

    Raises:
        ConfigError: an encoder cannot be loaded, or the prompt max length exceeds the
            text encoder's position table.
    """
    if config.preset == "Small":
        return _build_small(config, prompt_max_length, training_texts)
    vision_source = _localize(config.vision_encoder, cache_dir)
    text_source = _localize(config.text_encoder, cache_dir)
    check_prompt_length(_load_config(text_source, "spec.model.baseModel"), prompt_max_length, config.text_encoder)
    model = _load_pretrained(vision_source, text_source, config.projection_dim)
    tokenizer = _load_component(AutoTokenizer, text_source, "spec.model.baseModel")
    image_processor = _load_component(AutoImageProcessor, vision_source, "spec.model.visionEncoder")
    return DualEncoderBundle(model, tokenizer, image_processor)


def _build_small(config: ModelConfig, prompt_max_length: int, training_texts: Iterable[str]) -> DualEncoderBundle:
    tokenizer = presets.train_small_tokenizer(training_texts, prompt_max_length)
    text_config = presets.build_small_text_config(len(tokenizer), prompt_max_length)
    model_config = VisionTextDualEncoderConfig.from_vision_text_configs(
        presets.build_small_vision_config(), text_config, projection_dim=config.projection_dim
    )
    model = VisionTextDualEncoderModel(config=model_config)
    logger.info("built Small preset model", extra={"parameters": count_parameters(model), "vocab_size": len(tokenizer)})
    return DualEncoderBundle(model, tokenizer, presets.build_small_image_processor())


def usable_positions(text_config) -> int | None:
    """Token positions the text encoder can embed, or None if its config has no such field."""
    max_positions = getattr(text_config, "max_position_embeddings", None)
    if max_positions is None:
        return None
    if text_config.model_type in _OFFSET_POSITION_MODELS:
        return max_positions - (text_config.pad_token_id or 0) - 1
    return max_positions


def check_prompt_length(text_config, prompt_max_length: int, name: str) -> None:
    """Raise ConfigError if captions of ``prompt_max_length`` tokens do not fit the encoder."""
    limit = usable_positions(text_config)
    if limit is not None and prompt_max_length > limit:
        raise ConfigError(
            f"prompt max length {prompt_max_length} exceeds the position table of text encoder {name!r}, "
            f"which holds at most {limit} tokens; set spec.dataset.promptMaxLength to {limit} or less"
        )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _localize(name: str, cache_dir: Path) -> str:
    """Download an object-store directory to the cache; return ids and local paths unchanged."""
    if not name.startswith(("s3://", "gs://")):
        return name
    location = parse_location(name)
    target = cache_dir / "models" / location.scheme / (location.bucket or "") / location.key.strip("/")
    remote.download_directory(name, target)
    return str(target)


def _load_config(source: str, field: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(_unloadable_message(source, field, err)) from err


def _load_pretrained(vision_source: str, text_source: str, projection_dim: int) -> VisionTextDualEncoderModel:
    try:
        model = VisionTextDualEncoderModel.from_vision_text_pretrained(vision_source, text_source, projection_dim=projection_dim)
    except (OSError, ValueError) as err:
        raise ConfigError(_unloadable_message(f"{vision_source} + {text_source}", "spec.model", err)) from err
    # The projections and the logit scale are new: the encoders never had them.
    logger.warning("projection layers and logit scale are newly initialised and will be trained", extra={"projection_dim": projection_dim})
    return model


def _load_component(loader, source: str, field: str):
    try:
        return loader.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(_unloadable_message(source, field, err)) from err


def _unloadable_message(source: str, field: str, err: Exception) -> str:
    return (
        f"cannot load {source!r} ({field}): {err}. Give a Hugging Face id that is reachable from here, "
        "a local directory saved with save_pretrained, or an s3:// or gs:// copy of one; "
        "for an offline smoke test set spec.model.preset: Small"
    )
