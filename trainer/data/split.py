"""The random train/validation split, by image, so no image's captions leak across it."""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

from kubeclip.trainer.errors import DatasetError

SampleT = TypeVar("SampleT")


def split_by_image(samples: Sequence[SampleT], *, train_ratio: float, seed: int, key: str = "image") -> tuple[list[SampleT], list[SampleT]]:
    """Split samples (one per image, all its captions together) into training and validation.

    The samples are sorted by image path first, so the split depends only on the set of
    images and the seed, not on the order of lines in the JSONL file.

    Raises:
        DatasetError: either side would be empty.
    """
    ordered = sorted(samples, key=lambda sample: getattr(sample, key))
    validation_count = round(len(ordered) * (1.0 - train_ratio))
    if validation_count < 1 or validation_count >= len(ordered):
        raise DatasetError(
            f"a train split ratio of {train_ratio} over {len(ordered)} images leaves "
            f"{len(ordered) - validation_count} training and {validation_count} validation images; "
            "both need at least one: add images or change spec.dataset.trainSplitRatio and validationSplitRatio"
        )
    indices = list(range(len(ordered)))
    random.Random(seed).shuffle(indices)
    validation_indices = set(indices[:validation_count])
    train = [sample for index, sample in enumerate(ordered) if index not in validation_indices]
    validation = [sample for index, sample in enumerate(ordered) if index in validation_indices]
    return train, validation
