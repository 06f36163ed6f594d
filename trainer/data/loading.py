"""Torch datasets and loaders over a dataset ZIP: training pairs, evaluation images and captions.

Called by the training loop and by evaluation. Every worker process opens its own
handle on the archive (a ``ZipFile`` shared across ``fork`` would share one file
offset and return corrupt bytes), and every random choice is a pure function of the
seed, the epoch and the sample index, so runs and resumed runs see the same data.
"""

from __future__ import annotations

import os
import random
import signal
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kubeclip.trainer.data.images import ImageTransform, decode_image
from kubeclip.trainer.data.text import CaptionTokenizer, TokenTable, pad_token_batch
from kubeclip.trainer.data.validation import Sample


class ArchiveReader:
    """Reads members of one ZIP; opens the file lazily once per process."""

    def __init__(self, zip_path: Path) -> None:
        self.zip_path = Path(zip_path)
        self._archive: zipfile.ZipFile | None = None
        self._owner_pid: int | None = None

    def read(self, member: str) -> bytes:
        if self._archive is None or self._owner_pid != os.getpid():
            self._archive = zipfile.ZipFile(self.zip_path)
            self._owner_pid = os.getpid()
        return self._archive.read(member)

    def __getstate__(self) -> dict[str, object]:
        # Workers get the path only and open their own handle.
        return {"zip_path": self.zip_path, "_archive": None, "_owner_pid": None}


class ImageLoader:
    """Member name to a normalised image tensor of shape (3, H, W), float32."""

    def __init__(self, reader: ArchiveReader, transform: ImageTransform, max_pixels: int) -> None:
        self.reader = reader
        self.transform = transform
        self.max_pixels = max_pixels

    def load(self, member: str) -> torch.Tensor:
        image = decode_image(self.reader.read(member), member=member, target_short_side=self.transform.size, max_pixels=self.max_pixels)
        return self.transform(image)


class CaptionSource:
    """Token ids for caption ``j`` of sample ``i``: from the eager table, or tokenized on demand."""

    def __init__(self, samples: Sequence[Sample], tokenizer: CaptionTokenizer, table: TokenTable | None) -> None:
        self.samples = samples
        self.tokenizer = tokenizer
        self.table = table
        self.first_caption = np.cumsum([0] + [len(sample.captions) for sample in samples])

    def token_ids(self, sample_index: int, caption_index: int) -> Sequence[int]:
        if self.table is not None:
            return self.table[int(self.first_caption[sample_index]) + caption_index]
        return self.tokenizer.encode([self.samples[sample_index].captions[caption_index]])[0]


def choose_caption(seed: int, epoch: int, sample_index: int, caption_count: int) -> int:
    """The caption of a sample used in an epoch: a pure function of its arguments."""
    return random.Random(f"{seed}:{epoch}:{sample_index}").randrange(caption_count)


class TrainingPairs(Dataset):
    """One (image, caption) pair per image and epoch; the caption is drawn anew each epoch.

    Drawing one caption per image means a batch never contains two captions of the same
    image, which would be false negatives for the contrastive loss.
    """

    def __init__(self, samples: Sequence[Sample], images: ImageLoader, captions: CaptionSource, seed: int) -> None:
        self.samples = samples
        self.images = images
        self.captions = captions
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Sequence[int]]:
        sample = self.samples[index]
        caption_index = choose_caption(self.seed, self.epoch, index, len(sample.captions))
        return self.images.load(sample.image), self.captions.token_ids(index, caption_index)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch that can start part-way through, for resuming."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int) -> None:
        self.epoch = epoch
        self.start_index = start_index

    def permutation(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):
        return iter(self.permutation()[self.start_index :])

    def __len__(self) -> int:
        return self.size - self.start_index


class CollatePairs:
    """Stack images and pad captions to the batch's longest caption; picklable for workers."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple[torch.Tensor, Sequence[int]]]) -> dict[str, torch.Tensor]:
        pixel_values = torch.stack([image for image, _ in batch])
        input_ids, attention_mask = pad_token_batch([ids for _, ids in batch], self.pad_token_id)
        return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class EvaluationImages(Dataset):
    """Every image of a split once, in sample order."""

    def __init__(self, samples: Sequence[Sample], images: ImageLoader) -> None:
        self.samples = samples
        self.images = images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images.load(self.samples[index].image)


class CollateImages:
    def __call__(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(batch)


def _ignore_stop_signals(_worker_id: int) -> None:
    """Leave SIGINT and SIGTERM to the training process, which saves a checkpoint and stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_loader(dataset: Dataset, *, batch_size: int, num_workers: int, collate, sampler: Sampler | None = None, drop_last: bool = False) -> DataLoader:
    """Build a DataLoader with the settings every loader here shares."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        # A private generator: the loader would otherwise draw its workers' base seed
        # from the global RNG, and a resumed run would draw at another point than the
        # uninterrupted one. No data randomness depends on that seed.
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
        # Several batches in flight per worker hide JPEG decode time behind the GPU step.
        prefetch_factor=4 if num_workers > 0 else None,
    )
