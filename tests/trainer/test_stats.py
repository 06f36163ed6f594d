"""Tests of dataset statistics and the text report (stats.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from kubeclip.trainer.data.stats import (
    Distribution,
    compute_statistics,
    format_report,
    nearest_rank_percentiles,
    read_image_sizes,
)
from kubeclip.trainer.data.validation import Sample, ValidationReport, validate_archive


def report_of(samples: list[Sample], sizes: dict[str, tuple[int, int]]) -> ValidationReport:
    return ValidationReport(Path("data.zip"), "captions.jsonl", tuple(samples), (), len(samples), sizes, True)


def sample_report() -> ValidationReport:
    samples = [
        Sample("a.jpg", ("a cat", "a small grey cat on a sofa"), 1),
        Sample("b.jpg", ("one", "two words", "three words here"), 2),
        Sample("c.jpg", ("dog",), 3),
        Sample("d.jpg", ("a b c d e f", "x", "y", "z", "w", "v"), 4),
    ]
    sizes = {"a.jpg": (640, 480), "b.jpg": (200, 300), "c.jpg": (224, 1000), "d.jpg": (100, 50)}
    return report_of(samples, sizes)


def word_tokens(captions: list[str]) -> list[int]:
    """One token per word plus two special tokens."""
    return [len(caption.split()) + 2 for caption in captions]


def test_caption_counts() -> None:
    stats = compute_statistics(sample_report())
    assert stats.image_count == 4
    assert stats.caption_count == 12
    assert stats.captions_per_image == Distribution(1, 2.5, 6)
    assert stats.captions_per_image_histogram == {1: 1, 2: 1, 3: 1, 6: 1}


def test_words_per_caption() -> None:
    # Word counts: 2, 7, 1, 2, 3, 1, 6, 1, 1, 1, 1, 1; sorted, the 6th and 7th of 12 values are 1.
    stats = compute_statistics(sample_report())
    assert stats.words_per_caption == Distribution(1, 1, 7)


def test_token_lengths_against_max_length() -> None:
    # Token counts are words + 2, sorted: 3 x7, 4 x2, 5, 8, 9. Nearest rank of p90 is ceil(10.8) = 11.
    stats = compute_statistics(sample_report(), count_tokens=word_tokens, prompt_max_length=4)
    assert stats.tokens is not None
    assert stats.tokens.caption_count == 12
    assert stats.tokens.truncated_count == 3
    assert stats.tokens.percentiles == {50: 3, 90: 8, 95: 9, 99: 9, 100: 9}


def test_no_token_statistics_without_counter() -> None:
    assert compute_statistics(sample_report()).tokens is None


def test_token_counter_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="returned 1 lengths for 12 captions"):
        compute_statistics(sample_report(), count_tokens=lambda captions: [1])


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert nearest_rank_percentiles(values, (1, 50, 90, 100)) == {1: 1, 50: 50, 90: 90, 100: 100}
    assert nearest_rank_percentiles([7, 3, 5], (0, 34, 67, 100)) == {0: 3, 34: 5, 67: 7, 100: 7}
    assert nearest_rank_percentiles([], (50,)) == {}


def test_image_size_statistics() -> None:
    sizes = compute_statistics(sample_report(), min_short_side=224).image_sizes
    assert sizes is not None
    assert sizes.image_count == 4
    assert sizes.width == Distribution(100, 212, 640)
    assert sizes.height == Distribution(50, 390, 1000)
    # Short sides: 480, 200, 224, 50; 200 and 50 are under 224.
    assert sizes.short_side_below_count == 2


def test_empty_report_has_no_distributions() -> None:
    stats = compute_statistics(report_of([], {}))
    assert stats.image_count == 0
    assert stats.captions_per_image is None
    assert stats.words_per_caption is None
    assert stats.image_sizes is None


def make_archive(tmp_path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = io.BytesIO()
    Image.new("RGB", (300, 100)).save(rotated, format="JPEG", exif=exif.tobytes())
    plain = io.BytesIO()
    Image.new("L", (50, 40)).save(plain, format="PNG")
    zip_path = tmp_path / "data.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("captions.jsonl", "\n".join(json.dumps({"image": name, "captions": ["x y"]}) for name in ("r.jpg", "p.png")))
        archive.writestr("r.jpg", rotated.getvalue())
        archive.writestr("p.png", plain.getvalue())
    return zip_path


def test_sizes_read_from_headers_without_decoding(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path), decode_images=False)
    sizes = compute_statistics(report, min_short_side=60).image_sizes
    assert sizes is not None
    # The JPEG is stored 300x100 with EXIF orientation 6, so it displays as 100x300.
    assert sizes.width == Distribution(50, 75, 100)
    assert sizes.height == Distribution(40, 170, 300)
    assert sizes.short_side_below_count == 1


def test_read_image_sizes_leaves_out_unreadable(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path)
    assert read_image_sizes(zip_path, ["p.png", "captions.jsonl", "absent.png"]) == {"p.png": (50, 40)}


def test_format_report_lines() -> None:
    stats = compute_statistics(sample_report(), count_tokens=word_tokens, prompt_max_length=4)
    text = format_report(sample_report(), stats)
    assert "Dataset data.zip (captions.jsonl, images decoded): valid, 0 errors, 0 warnings." in text
    assert "  captions per image: min 1, median 2.5, max 6" in text
    assert "    6 captions: 1 images" in text
    assert "note: 1 images have fewer than 2 captions" in text
    assert "note: 1 images have more than 5 captions" in text
    assert "tokens per caption, prompt included: median 3, p90 8, p95 9, p99 9, max 9" in text
    assert "truncated at prompt max length 4: 3 of 12 captions (25.0%)" in text
    assert "short side under 224 px (upscaled by preprocessing): 2 of 4 images (50.0%)" in text


def test_format_report_lists_problems(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path)
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("extra.jpg", b"")
    report = validate_archive(zip_path)
    text = format_report(report, compute_statistics(report))
    assert "valid, 0 errors, 1 warnings." in text
    assert "archive: 1 image files in the archive are not listed" in text
    assert "  unlisted-images: 1" in text


def test_statistics_to_dict_is_json() -> None:
    stats = compute_statistics(sample_report(), count_tokens=word_tokens)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["caption_count"] == 12
    assert data["tokens"]["percentiles"]["50"] == 3
