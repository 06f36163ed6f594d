"""Captions to token ids: the system prompt and template, truncation, eager or lazy tokenization.

Called by the training and evaluation datasets. Padding happens per batch in
``collate_pairs``, so a batch is only as long as its longest caption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from kubeclip.trainer.config import CAPTION_PLACEHOLDER

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """The system prompt and template that turn a raw caption into the encoder's input text."""

    system_prompt: str | None = None
    template: str | None = None

    def apply(self, caption: str) -> str:
        """Return ``caption`` inside the template, after the system prompt.

        ``str.replace`` is used instead of ``str.format`` so captions and prompts may
        contain braces.
        """
        text = self.template.replace(CAPTION_PLACEHOLDER, caption) if self.template else caption
        if self.system_prompt:
            text = f"{self.system_prompt.rstrip()} {text}"
        return text


class CaptionTokenizer:
    """A tokenizer bound to a prompt format and a max length; picklable for loader workers."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_length = max_length
        pad_id = tokenizer.pad_token_id
        self.pad_token_id = 0 if pad_id is None else int(pad_id)

    def encode(self, captions: Sequence[str]) -> list[list[int]]:
        """Token ids of each caption after the prompt is applied, truncated to ``max_length``."""
        texts = [self.prompt.apply(caption) for caption in captions]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def count_tokens(self, captions: Sequence[str]) -> list[int]:
        """Token counts before truncation, for dataset statistics."""
        texts = [self.prompt.apply(caption) for caption in captions]
        return [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]

    def fingerprint(self) -> str:
        """Return a digest of everything that decides the token ids, for cache keys."""
        vocab = sorted(self.tokenizer.get_vocab().items())
        payload = json.dumps([vocab, type(self.tokenizer).__name__, self.max_length, dataclasses.asdict(self.prompt)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TokenTable:
    """Token ids of every caption, flattened into one array with offsets (cheap to share with workers)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids = ids
        self.offsets = offsets

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> TokenTable:
        lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.fromiter((token for seq in sequences for token in seq), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


def tokenize_eagerly(tokenizer: CaptionTokenizer, captions: list[str], cache_dir: Path | None) -> TokenTable:
    """Tokenize all captions once, reusing a cache file when the same inputs were seen before."""
    key = hashlib.sha256((tokenizer.fingerprint() + "\n".join(captions)).encode()).hexdigest()[:24]
    cache_file = cache_dir / f"tokens-{key}.npz" if cache_dir else None
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file) as saved:
            logger.info("token cache hit", extra={"path": str(cache_file), "captions": len(captions)})
            return TokenTable(saved["ids"], saved["offsets"])
    table = TokenTable.from_lists(tokenizer.encode(captions))
    if cache_file is not None:
        _save_atomically(cache_file, table)
    return table


def _save_atomically(path: Path, table: TokenTable) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, ids=table.ids, offsets=table.offsets)
    partial.replace(path)


def pad_token_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence in the batch.

    Returns:
        input_ids: int64 tensor of shape (batch, longest).
        attention_mask: int64 tensor of shape (batch, longest), 1 for real tokens.
    """
    longest = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(np.asarray(seq, dtype=np.int64))
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
