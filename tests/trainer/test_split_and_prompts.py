"""The train/validation split and the prompt handling."""

from __future__ import annotations

import dataclasses

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kubeclip.trainer.data.split import split_by_image
from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat, TokenTable, pad_token_batch, tokenize_eagerly
from kubeclip.trainer.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class FakeSample:
    image: str
    captions: tuple[str, ...] = ("a", "b")


def samples(count: int) -> list[FakeSample]:
    return [FakeSample(f"images/{index:04d}.jpg") for index in range(count)]


def test_split_same_seed_same_split():
    first = split_by_image(samples(100), train_ratio=0.9, seed=7)
    second = split_by_image(list(reversed(samples(100))), train_ratio=0.9, seed=7)
    assert first == second


def test_split_other_seed_other_split():
    _, validation_a = split_by_image(samples(100), train_ratio=0.9, seed=1)
    _, validation_b = split_by_image(samples(100), train_ratio=0.9, seed=2)
    assert validation_a != validation_b


def test_split_ratio_and_disjoint_images():
    train, validation = split_by_image(samples(200), train_ratio=0.9, seed=0)
    assert len(validation) == 20
    assert len(train) == 180
    assert not {s.image for s in train} & {s.image for s in validation}


def test_split_empty_validation_rejected():
    with pytest.raises(DatasetError, match=r"leaves 5 training and 0 validation images.*trainSplitRatio"):
        split_by_image(samples(5), train_ratio=0.9, seed=0)


def test_prompt_template_and_system_prompt():
    prompt = PromptFormat(system_prompt="Describe:", template="a photo of {caption}")
    assert prompt.apply("a dog {running}") == "Describe: a photo of a dog {running}"
    assert PromptFormat().apply("plain") == "plain"


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "photo": 3, "of": 4, "dog": 5, "cat": 6}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def test_tokenizer_applies_prompt_and_truncates():
    tokenizer = CaptionTokenizer(make_tokenizer(), PromptFormat(template="a photo of {caption}"), max_length=5)
    assert tokenizer.encode(["dog"]) == [[2, 3, 4, 5]]
    assert tokenizer.encode(["dog cat dog cat"]) == [[2, 3, 4, 5, 6]]
    assert tokenizer.count_tokens(["dog cat dog cat"]) == [7]


def test_eager_tokenization_cache_reused(tmp_path):
    tokenizer = CaptionTokenizer(make_tokenizer(), PromptFormat(), max_length=8)
    table = tokenize_eagerly(tokenizer, ["a dog", "a cat photo"], tmp_path)
    cached = list(tmp_path.glob("tokens-*.npz"))
    assert len(cached) == 1
    again = tokenize_eagerly(tokenizer, ["a dog", "a cat photo"], tmp_path)
    assert [list(again[i]) for i in range(2)] == [list(table[i]) for i in range(2)] == [[2, 5], [2, 6, 3]]


def test_token_table_offsets():
    table = TokenTable.from_lists([[1, 2], [], [3]])
    assert len(table) == 3
    assert list(table[1]) == []
    assert list(table[2]) == [3]


def test_batch_padded_to_longest_caption():
    input_ids, attention_mask = pad_token_batch([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
