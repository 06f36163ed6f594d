"""Tests of the built-in example dataset (builtin.py and builtin_captions.jsonl)."""

from __future__ import annotations

import importlib.resources
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kubeclip.trainer.data import builtin
from kubeclip.trainer.data.builtin import BUILTIN_DATASETS, materialize_builtin_dataset, parse_builtin_source
from kubeclip.trainer.data.validation import validate_archive
from kubeclip.trainer.errors import ConfigError, DatasetError

#: Sample photographs and their captions, listed in builtin_captions.jsonl before the lfw_subset.npy rows.
PHOTO_COUNT = 23
PHOTO_CAPTION_COUNT = 101
LFW_FILE = "lfw_subset.npy"
LFW_FACE_ROWS = range(0, 100)
LFW_NON_FACE_ROWS = range(100, 200)
LFW_CAPTIONS_PER_IMAGE = 3


@pytest.fixture(scope="module")
def builtin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize_builtin_dataset("skimage-photos", tmp_path_factory.mktemp("cache"))


def package_records() -> list[dict[str, object]]:
    text = importlib.resources.files("kubeclip.trainer.data").joinpath("builtin_captions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def lfw_records() -> dict[int, dict[str, object]]:
    return {record["index"]: record for record in package_records() if record["file"] == LFW_FILE}  # type: ignore[misc]


def lfw_array() -> np.ndarray:
    with importlib.resources.files("skimage").joinpath("data", LFW_FILE).open("rb") as file:
        return np.load(file, allow_pickle=False)


def test_builtin_dataset_path(builtin_zip: Path) -> None:
    assert builtin_zip.name == "skimage-photos.zip"
    assert builtin_zip.is_file()


def test_builtin_dataset_is_valid(builtin_zip: Path) -> None:
    report = validate_archive(builtin_zip)
    assert report.problems == ()
    assert len(report.samples) == len(package_records())
    assert len(report.samples) == PHOTO_COUNT + len(LFW_FACE_ROWS) + len(LFW_NON_FACE_ROWS)


def test_builtin_dataset_caption_counts(builtin_zip: Path) -> None:
    report = validate_archive(builtin_zip)
    photos = [sample for sample in report.samples if not sample.image.startswith("images/lfw_subset_")]
    crops = [sample for sample in report.samples if sample.image.startswith("images/lfw_subset_")]
    assert len(photos) == PHOTO_COUNT
    assert all(4 <= len(sample.captions) <= 5 for sample in photos)
    assert all(len(sample.captions) == LFW_CAPTIONS_PER_IMAGE for sample in crops)
    expected_total = sum(len(record["captions"]) for record in package_records())  # type: ignore[arg-type]
    assert sum(len(sample.captions) for sample in report.samples) == expected_total
    assert expected_total == PHOTO_CAPTION_COUNT + 200 * LFW_CAPTIONS_PER_IMAGE


def test_builtin_dataset_has_every_lfw_row(builtin_zip: Path) -> None:
    records = lfw_records()
    assert sorted(records) == list(LFW_FACE_ROWS) + list(LFW_NON_FACE_ROWS)
    with zipfile.ZipFile(builtin_zip) as archive:
        names = set(archive.namelist())
    for index in records:
        assert f"images/lfw_subset_{index:03d}.png" in names


def test_lfw_face_captions_say_face() -> None:
    records = lfw_records()
    for index in LFW_FACE_ROWS:
        captions = [caption.lower() for caption in records[index]["captions"]]  # type: ignore[union-attr]
        assert any("face" in caption or "close-up" in caption for caption in captions), index
        assert not any("no face" in caption for caption in captions), index


def test_lfw_non_face_captions_say_no_face() -> None:
    records = lfw_records()
    for index in LFW_NON_FACE_ROWS:
        captions = [caption.lower() for caption in records[index]["captions"]]  # type: ignore[union-attr]
        assert any("no face" in caption or "not a whole face" in caption for caption in captions), index


def test_builtin_dataset_is_reproducible(builtin_zip: Path, tmp_path: Path) -> None:
    again = materialize_builtin_dataset("skimage-photos", tmp_path)
    assert again.read_bytes() == builtin_zip.read_bytes()


def test_builtin_photos_are_small_jpegs(builtin_zip: Path) -> None:
    report = validate_archive(builtin_zip)
    photos = [sample.image for sample in report.samples if not sample.image.startswith("images/lfw_subset_")]
    assert all(image.startswith("images/") and image.endswith(".jpg") for image in photos)
    assert max(max(report.image_sizes[image]) for image in photos) <= 512
    with zipfile.ZipFile(builtin_zip) as archive:
        assert all(archive.read(image)[:2] == b"\xff\xd8" for image in photos)


def test_lfw_crops_are_lossless_grayscale_pngs(builtin_zip: Path) -> None:
    expected_pixels = np.round(lfw_array() * 255).astype(np.uint8)
    with zipfile.ZipFile(builtin_zip) as archive:
        for index in lfw_records():
            with Image.open(io.BytesIO(archive.read(f"images/lfw_subset_{index:03d}.png"))) as image:
                assert image.format == "PNG"
                assert image.mode == "L"
                assert image.size == (25, 25)
                assert np.array_equal(np.asarray(image), expected_pixels[index]), index


def test_builtin_captions_are_distinct() -> None:
    captions = [caption for record in package_records() for caption in record["captions"]]  # type: ignore[union-attr]
    assert len(captions) == len(set(captions))


def test_missing_array_file_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    find_installed_file = builtin._sample_file
    monkeypatch.setattr(
        builtin, "_sample_file", lambda package, name: None if name == LFW_FILE else find_installed_file(package, name)
    )
    with caplog.at_level(logging.WARNING, logger=builtin.__name__):
        path = materialize_builtin_dataset("skimage-photos", tmp_path)
    assert len(validate_archive(path).samples) == PHOTO_COUNT
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    expected = "built-in dataset: lfw_subset.npy is not installed with skimage, so its 200 image(s) are left out"
    assert warnings == [expected]


@pytest.mark.parametrize("index", [200, -1, "7"])
def test_invalid_lfw_index_raises(tmp_path: Path, index: object) -> None:
    captions_file = tmp_path / "captions.jsonl"
    record = {"package": "skimage", "file": LFW_FILE, "index": index, "captions": ["A grey patch."]}
    captions_file.write_text(json.dumps(record) + "\n", encoding="utf-8")
    expected = rf"index {index!r} into lfw_subset.npy is invalid, because that file contains rows 0 to 199"
    with pytest.raises(DatasetError, match=expected):
        builtin._archive_entries(captions_file)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((2, 5), dtype=np.float64), r"float64 array of shape \(2, 5\)"),
        (np.zeros((2, 5, 5), dtype=np.uint8), r"uint8 array of shape \(2, 5, 5\)"),
        (np.full((2, 5, 5), 1.5), r"values range from 1.5 to 1.5"),
    ],
)
def test_invalid_image_array_raises(tmp_path: Path, array: np.ndarray, expected: str) -> None:
    array_file = tmp_path / "images.npy"
    np.save(array_file, array)
    with pytest.raises(DatasetError, match=expected):
        builtin._load_image_array(array_file)


def test_rebuild_replaces_existing_file(tmp_path: Path) -> None:
    (tmp_path / "skimage-photos.zip").write_bytes(b"stale")
    path = materialize_builtin_dataset("skimage-photos", tmp_path)
    assert zipfile.is_zipfile(path)
    assert sorted(item.name for item in tmp_path.iterdir()) == ["skimage-photos.zip"]


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown built-in dataset 'flowers'.*builtin://skimage-photos"):
        materialize_builtin_dataset("flowers", tmp_path)


def test_parse_builtin_source() -> None:
    assert parse_builtin_source("builtin://skimage-photos") == "skimage-photos"
    assert set(BUILTIN_DATASETS) == {"skimage-photos"}
    with pytest.raises(ConfigError, match="unknown built-in dataset 'nope'"):
        parse_builtin_source("builtin://nope")
    with pytest.raises(ConfigError, match="is not a built-in dataset"):
        parse_builtin_source("s3://bucket/data.zip")
