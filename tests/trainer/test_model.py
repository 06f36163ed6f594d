"""Building the dual encoder from local directories, the prompt-length limit, and the Small preset."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel, RobertaConfig, RobertaModel

from kubeclip.trainer import presets
from kubeclip.trainer.config import ModelConfig
from kubeclip.trainer.errors import ConfigError
from kubeclip.trainer.model import build_dual_encoder, check_prompt_length, usable_positions

CAPTIONS = ["a dog runs on the beach", "a cat sleeps on a red sofa", "two people ride bicycles"] * 4


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny CLIP vision model and a tiny RoBERTa, each saved with its preprocessing, as a user would."""
    root = tmp_path_factory.mktemp("encoders")
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(root / "vision")
    presets.build_small_image_processor().save_pretrained(root / "vision")
    tokenizer = presets.train_small_tokenizer(CAPTIONS, max_length=40)
    text = RobertaModel(presets.build_small_text_config(len(tokenizer), 40))
    text.save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    return root / "vision", root / "text"


def test_dual_encoder_built_from_local_directories(encoder_dirs, tmp_path):
    vision_dir, text_dir = encoder_dirs
    config = ModelConfig(vision_encoder=str(vision_dir), text_encoder=str(text_dir), projection_dim=16)
    bundle = build_dual_encoder(config, prompt_max_length=32, cache_dir=tmp_path, training_texts=[])
    assert bundle.model.config.projection_dim == 16
    assert bundle.model.config.vision_config.hidden_size == 32
    assert bundle.tokenizer("a dog")["input_ids"][0] == bundle.tokenizer.bos_token_id
    assert bundle.image_processor.crop_size["height"] == presets.SMALL_IMAGE_SIZE


def test_prompt_length_over_local_encoder_limit_rejected(encoder_dirs, tmp_path):
    vision_dir, text_dir = encoder_dirs
    config = ModelConfig(vision_encoder=str(vision_dir), text_encoder=str(text_dir))
    with pytest.raises(ConfigError, match=r"holds at most 40 tokens; set spec.dataset.promptMaxLength to 40 or less"):
        build_dual_encoder(config, prompt_max_length=64, cache_dir=tmp_path, training_texts=[])


def test_missing_encoder_names_field_and_remedy(tmp_path):
    config = ModelConfig(vision_encoder=str(tmp_path / "missing-vision"), text_encoder=str(tmp_path / "missing-text"))
    with pytest.raises(ConfigError, match=r"spec.model.baseModel.*preset: Small"):
        build_dual_encoder(config, prompt_max_length=32, cache_dir=tmp_path, training_texts=[])


def test_usable_positions_per_family():
    assert usable_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(CLIPTextConfig()) == 77
    with pytest.raises(ConfigError, match="holds at most 77 tokens"):
        check_prompt_length(CLIPTextConfig(), 128, "openai/clip-vit-base-patch32")


def test_small_preset_tokenizer_handles_unseen_words():
    tokenizer = presets.train_small_tokenizer(CAPTIONS, max_length=16)
    ids = tokenizer("zebra crossing")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
