"""The Small preset: small randomly initialised encoders of the real architectures.

A CLIP vision transformer and a RoBERTa text encoder, both a few layers deep, and a
byte-level BPE tokenizer trained on the run's own training captions. Nothing is
downloaded, so the preset runs offline, in tests and in the built-in example.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
from transformers import CLIPImageProcessor, CLIPVisionConfig, PreTrainedTokenizerFast, RobertaConfig

SMALL_IMAGE_SIZE = 64
SMALL_VOCAB_SIZE = 4096
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_small_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=SMALL_IMAGE_SIZE,
        patch_size=8,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
    )


def build_small_text_config(vocab_size: int, max_length: int) -> RobertaConfig:
    # RoBERTa numbers positions from pad_token_id + 1, so it needs 2 more rows than tokens.
    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def build_small_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": SMALL_IMAGE_SIZE},
        crop_size={"height": SMALL_IMAGE_SIZE, "width": SMALL_IMAGE_SIZE},
    )


def train_small_tokenizer(texts: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with RoBERTa's special tokens on ``texts``.

    Byte-level BPE never produces an unknown token, so captions unseen in training
    (validation, or a user's query later) still tokenize.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SMALL_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
