"""Dataset statistics that help choose training settings, and their plain-text rendering.

``compute_statistics`` summarises a ``ValidationReport``: captions per image,
words and (with a tokenizer) tokens per caption against the prompt max length,
and image sizes read from image headers. ``format_report`` renders the report and
statistics for a terminal. ``kubeclip dataset validate`` calls both.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubeclip.trainer.data import archive as archive_io
from kubeclip.trainer.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image_size
from kubeclip.trainer.data.validation import ValidationReport, format_problems
from kubeclip.trainer.errors import DatasetError

logger = logging.getLogger(__name__)

#: Returns the token count of each caption, after any prompt template is applied.
TokenCounter = Callable[[list[str]], list[int]]

#: Percentiles of the token lengths that are reported.
TOKEN_PERCENTILES = (50, 90, 95, 99, 100)
#: Captions per image that the dataset format recommends.
RECOMMENDED_CAPTIONS_PER_IMAGE = (2, 5)
#: The shortest-edge size of CLIP ViT-B preprocessing. Images below it are upscaled.
DEFAULT_MIN_SHORT_SIDE = 224
#: Captions passed to ``count_tokens`` per call, so a large dataset is tokenized in chunks.
_TOKEN_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class Distribution:
    """Minimum, median and maximum of a list of numbers."""

    minimum: float
    median: float
    maximum: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution | None:
        """Return the distribution of ``values``, or None when there are none."""
        if not values:
            return None
        return cls(min(values), statistics.median(values), max(values))


@dataclasses.dataclass(frozen=True)
class TokenLengthStatistics:
    """Token counts per caption compared with the prompt max length."""

    prompt_max_length: int
    caption_count: int
    #: Captions longer than ``prompt_max_length`` tokens, which training truncates.
    truncated_count: int
    #: Nearest-rank percentile (such as 90) to token count.
    percentiles: dict[int, int]


@dataclasses.dataclass(frozen=True)
class ImageSizeStatistics:
    """Displayed image sizes, in pixels, after EXIF orientation."""

    image_count: int
    width: Distribution
    height: Distribution
    min_short_side: int
    #: Images whose shorter side is below ``min_short_side``, so preprocessing upscales them.
    short_side_below_count: int


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """Counts and distributions of the valid samples of one archive."""

    image_count: int
    caption_count: int
    captions_per_image: Distribution | None
    #: Number of captions to number of images that have that many.
    captions_per_image_histogram: dict[int, int]
    words_per_caption: Distribution | None
    #: None unless a token counter was given.
    tokens: TokenLengthStatistics | None
    #: None when no image size could be read.
    image_sizes: ImageSizeStatistics | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compute_statistics(
    report: ValidationReport,
    *,
    count_tokens: TokenCounter | None = None,
    prompt_max_length: int = 128,
    min_short_side: int = DEFAULT_MIN_SHORT_SIDE,
) -> DatasetStatistics:
    """Compute statistics of the report's valid samples.

    Image sizes come from the report when it decoded the images. Otherwise they are
    read from the image headers in the archive, which is fast because no pixel data
    is decoded.
    """
    captions = [caption for sample in report.samples for caption in sample.captions]
    counts_per_image = [len(sample.captions) for sample in report.samples]
    return DatasetStatistics(
        image_count=len(report.samples),
        caption_count=len(captions),
        captions_per_image=Distribution.of(counts_per_image),
        captions_per_image_histogram=dict(sorted(collections.Counter(counts_per_image).items())),
        words_per_caption=Distribution.of([len(caption.split()) for caption in captions]),
        tokens=None if count_tokens is None else token_length_statistics(captions, count_tokens, prompt_max_length),
        image_sizes=image_size_statistics(_sample_image_sizes(report).values(), min_short_side),
    )


def token_length_statistics(captions: list[str], count_tokens: TokenCounter, prompt_max_length: int) -> TokenLengthStatistics:
    """Count the tokens of every caption and summarise them against ``prompt_max_length``."""
    lengths: list[int] = []
    for start in range(0, len(captions), _TOKEN_BATCH_SIZE):
        batch = captions[start : start + _TOKEN_BATCH_SIZE]
        batch_lengths = list(count_tokens(batch))
        if len(batch_lengths) != len(batch):
            raise ValueError(f"count_tokens returned {len(batch_lengths)} lengths for {len(batch)} captions")
        lengths.extend(batch_lengths)
    return TokenLengthStatistics(
        prompt_max_length=prompt_max_length,
        caption_count=len(lengths),
        truncated_count=sum(1 for length in lengths if length > prompt_max_length),
        percentiles=nearest_rank_percentiles(lengths, TOKEN_PERCENTILES),
    )


def nearest_rank_percentiles(values: Sequence[int], percentiles: Iterable[int]) -> dict[int, int]:
    """Return the nearest-rank percentiles: the smallest value with at least p% of values at or below it."""
    if not values:
        return {}
    ordered = sorted(values)
    return {percentile: ordered[max(1, math.ceil(percentile / 100 * len(ordered))) - 1] for percentile in percentiles}


def image_size_statistics(sizes: Iterable[tuple[int, int]], min_short_side: int) -> ImageSizeStatistics | None:
    """Summarise ``(width, height)`` pairs, or return None when there are none."""
    size_list = list(sizes)
    width = Distribution.of([width for width, _ in size_list])
    height = Distribution.of([height for _, height in size_list])
    if width is None or height is None:
        return None
    below = sum(1 for size in size_list if min(size) < min_short_side)
    return ImageSizeStatistics(len(size_list), width, height, min_short_side, below)


def _sample_image_sizes(report: ValidationReport) -> dict[str, tuple[int, int]]:
    images = [sample.image for sample in report.samples]
    if report.images_decoded:
        return {image: report.image_sizes[image] for image in images if image in report.image_sizes}
    return read_image_sizes(report.zip_path, images)


def read_image_sizes(zip_path: Path, members: Iterable[str], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict[str, tuple[int, int]]:
    """Read the displayed size of each image member from its header, leaving out unreadable ones."""
    sizes: dict[str, tuple[int, int]] = {}
    with archive_io.open_archive(zip_path) as archive:
        for member in members:
            try:
                with archive.open(member) as stream:
                    sizes[member] = read_image_size(stream, member=member, max_pixels=max_pixels)
            except (DatasetError, OSError, KeyError) as err:
                logger.debug("no size for image %s in %s: %s", member, zip_path, err)
    return sizes


# --- Rendering ------------------------------------------------------------------------


def format_report(report: ValidationReport, stats: DatasetStatistics, *, max_problems: int = 20) -> str:
    """Render the validation result and the statistics as plain text for a terminal."""
    statistics_lines = [_format_counts(stats)]
    if stats.tokens is not None:
        statistics_lines.append(_format_tokens(stats.tokens))
    if stats.image_sizes is not None:
        statistics_lines.append(_format_image_sizes(stats.image_sizes))
    return _format_result(report, max_problems) + "\n\n" + "\n".join(statistics_lines)


def _format_result(report: ValidationReport, max_problems: int) -> str:
    verdict = "valid" if report.is_valid else "INVALID"
    decoded = "images decoded" if report.images_decoded else "images not decoded"
    lines = [
        f"Dataset {report.zip_path} ({report.jsonl_member}, {decoded}): {verdict}, "
        f"{len(report.errors)} errors, {len(report.warnings)} warnings.",
    ]
    if report.problems:
        lines += ["", "Problems:", format_problems(report.problems, max_problems), "", report.summary()]
    return "\n".join(lines)


def _format_counts(stats: DatasetStatistics) -> str:
    lines = ["Statistics of the valid samples:", f"  images: {stats.image_count}", f"  captions: {stats.caption_count}"]
    if stats.captions_per_image is not None:
        lines.append(f"  captions per image: {_format_distribution(stats.captions_per_image)}")
        lines += [f"    {count} captions: {images} images" for count, images in stats.captions_per_image_histogram.items()]
        lines += _format_caption_count_advice(stats.captions_per_image_histogram)
    if stats.words_per_caption is not None:
        lines.append(f"  words per caption: {_format_distribution(stats.words_per_caption)}")
    return "\n".join(lines)


def _format_caption_count_advice(histogram: Mapping[int, int]) -> list[str]:
    low, high = RECOMMENDED_CAPTIONS_PER_IMAGE
    fewer = sum(images for count, images in histogram.items() if count < low)
    more = sum(images for count, images in histogram.items() if count > high)
    advice = []
    if fewer:
        advice.append(f"  note: {fewer} images have fewer than {low} captions, but {low} to {high} per image are recommended.")
    if more:
        advice.append(f"  note: {more} images have more than {high} captions, but {low} to {high} per image are recommended.")
    return advice


def _format_tokens(tokens: TokenLengthStatistics) -> str:
    percentiles = ", ".join(_percentile_label(percentile) + f" {value}" for percentile, value in tokens.percentiles.items())
    share = tokens.truncated_count / tokens.caption_count if tokens.caption_count else 0.0
    return "\n".join(
        [
            f"  tokens per caption, prompt included: {percentiles}",
            f"  truncated at prompt max length {tokens.prompt_max_length}: "
            f"{tokens.truncated_count} of {tokens.caption_count} captions ({share:.1%})",
        ]
    )


def _percentile_label(percentile: int) -> str:
    return {50: "median", 100: "max"}.get(percentile, f"p{percentile}")


def _format_image_sizes(sizes: ImageSizeStatistics) -> str:
    share = sizes.short_side_below_count / sizes.image_count
    return "\n".join(
        [
            f"  image width (px): {_format_distribution(sizes.width)}",
            f"  image height (px): {_format_distribution(sizes.height)}",
            f"  short side under {sizes.min_short_side} px (upscaled by preprocessing): "
            f"{sizes.short_side_below_count} of {sizes.image_count} images ({share:.1%})",
        ]
    )


def _format_distribution(distribution: Distribution) -> str:
    return f"min {_format_number(distribution.minimum)}, median {_format_number(distribution.median)}, max {_format_number(distribution.maximum)}"


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
