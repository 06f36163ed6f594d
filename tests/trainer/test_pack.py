"""Tests of packing a folder into a dataset archive (pack.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from kubeclip.trainer.data.pack import pack_directory
from kubeclip.trainer.data.validation import validate_archive
from kubeclip.trainer.errors import DatasetError


def write_image(path: Path, color: str = "red", image_format: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), color).save(path, format=image_format)
    return path


def jsonl_folder(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    write_image(source / "images" / "cat.jpg", "red")
    write_image(source / "images" / "dog.png", "blue", "PNG")
    write_image(source / "nested" / "bird.jpg", "green")
    records = [
        {"image": "images/cat.jpg", "captions": ["a cat", "a red picture"]},
        {"image": "nested\\bird.jpg", "captions": ["a bird"]},
        {"image": "./images/dog.png", "captions": ["a dog", "a blue picture", "café"]},
    ]
    (source / "data.jsonl").write_text("\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n", encoding="utf-8")
    return source


def test_pack_jsonl_round_trip(tmp_path: Path) -> None:
    result = pack_directory(jsonl_folder(tmp_path), tmp_path / "out.zip")
    report = validate_archive(tmp_path / "out.zip")
    assert report.problems == ()
    assert [(sample.image, sample.captions) for sample in report.samples] == [
        ("images/cat.jpg", ("a cat", "a red picture")),
        ("nested/bird.jpg", ("a bird",)),
        ("images/dog.png", ("a dog", "a blue picture", "café")),
    ]
    assert result.image_count == 3
    assert result.caption_count == 6
    assert result.archive_bytes == (tmp_path / "out.zip").stat().st_size
    assert result.report.zip_path == tmp_path / "out.zip"


def test_pack_stores_images_unchanged(tmp_path: Path) -> None:
    source = jsonl_folder(tmp_path)
    pack_directory(source, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        infos = {info.filename: info for info in archive.infolist()}
        assert list(infos) == sorted(infos)
        assert set(infos) == {"captions.jsonl", "images/cat.jpg", "images/dog.png", "nested/bird.jpg"}
        assert infos["images/cat.jpg"].compress_type == zipfile.ZIP_STORED
        assert infos["images/dog.png"].compress_type == zipfile.ZIP_STORED
        assert infos["captions.jsonl"].compress_type == zipfile.ZIP_DEFLATED
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos.values())
        assert archive.read("images/cat.jpg") == (source / "images" / "cat.jpg").read_bytes()


def test_pack_is_deterministic(tmp_path: Path) -> None:
    source = jsonl_folder(tmp_path)
    pack_directory(source, tmp_path / "first.zip")
    pack_directory(source, tmp_path / "second.zip")
    assert (tmp_path / "first.zip").read_bytes() == (tmp_path / "second.zip").read_bytes()


def test_pack_groups_csv_rows(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "img" / "b.jpg")
    write_image(source / "img" / "a.jpg")
    rows = [
        "image,caption",
        "img/b.jpg,first caption of b",
        'img/a.jpg,"a caption, with a comma"',
        "img\\b.jpg,second caption of b",
        "./img/b.jpg,third caption of b",
        "img/a.jpg,another caption of a",
    ]
    (source / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = pack_directory(source, tmp_path / "out.zip")
    report = validate_archive(tmp_path / "out.zip")
    assert [(sample.image, sample.captions) for sample in report.samples] == [
        ("img/b.jpg", ("first caption of b", "second caption of b", "third caption of b")),
        ("img/a.jpg", ("a caption, with a comma", "another caption of a")),
    ]
    assert result.caption_count == 5


def test_pack_reads_tsv_with_bom(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.tsv").write_text("\ufeffimage\tcaption\na.jpg\ta photo, red\n", encoding="utf-8")
    pack_directory(source, tmp_path / "out.zip")
    report = validate_archive(tmp_path / "out.zip")
    assert report.samples[0].captions == ("a photo, red",)


def test_pack_reports_unlisted_images(tmp_path: Path) -> None:
    source = jsonl_folder(tmp_path)
    write_image(source / "extra" / "unused.jpg")
    result = pack_directory(source, tmp_path / "out.zip")
    assert result.unlisted_images == ("extra/unused.jpg",)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert "extra/unused.jpg" not in archive.namelist()


def test_pack_lists_every_missing_image(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.csv").write_text("image,caption\nmissing1.jpg,x\na.jpg,y\nmissing2.jpg,z\n../outside.jpg,w\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        pack_directory(source, tmp_path / "out.zip")
    message = str(caught.value)
    assert "lists 3 images that cannot be packed" in message
    assert "captions.csv line 2: Image 'missing1.jpg' does not exist." in message
    assert "captions.csv line 4: Image 'missing2.jpg' does not exist." in message
    assert "captions.csv line 5: Image '../outside.jpg' is outside the source folder." in message
    assert not (tmp_path / "out.zip").exists()


def test_pack_rejects_bad_caption_rows(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.csv").write_text("image,caption\na.jpg,\n,orphan caption\na.jpg,fine\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"has 2 problems:\n  captions\.csv line 2: The row has no caption\.") as caught:
        pack_directory(source, tmp_path / "out.zip")
    assert "captions.csv line 3: The row has no image path." in str(caught.value)


def test_pack_rejects_table_without_header(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.csv").write_text("a.jpg,a red picture\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['image', 'caption'\].*Fix: make the first row the header"):
        pack_directory(source, tmp_path / "out.zip")


def test_pack_reports_jsonl_problems(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.jsonl").write_text('{"image": "a.jpg"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"has 2 problems") as caught:
        pack_directory(source, tmp_path / "out.zip")
    assert 'captions.jsonl line 1: The object has no "captions" key.' in str(caught.value)
    assert "captions.jsonl line 2: The line is not valid JSON" in str(caught.value)


def test_pack_requires_one_captions_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "a.jsonl").write_text("", encoding="utf-8")
    (source / "captions.csv").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"exactly one captions file.*found: a\.jsonl, captions\.csv.*--captions-file"):
        pack_directory(source, tmp_path / "out.zip")


def test_pack_uses_chosen_captions_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "pics" / "a.jpg")
    (source / "meta").mkdir()
    (source / "meta" / "list.csv").write_text("image,caption\n../pics/a.jpg,a red picture\n", encoding="utf-8")
    (source / "other.jsonl").write_text("", encoding="utf-8")
    pack_directory(source, tmp_path / "out.zip", captions_file="meta/list.csv")
    report = validate_archive(tmp_path / "out.zip")
    assert report.samples[0].image == "pics/a.jpg"


def test_failed_pack_keeps_previous_output(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "broken.jpg").write_bytes(b"not a jpeg")
    (source / "captions.csv").write_text("image,caption\nbroken.jpg,a picture\n", encoding="utf-8")
    output = tmp_path / "out" / "data.zip"
    output.parent.mkdir()
    output.write_bytes(b"previous archive")
    with pytest.raises(DatasetError, match=r"is invalid, so it was not written:\n  broken\.jpg \(line 1\): The image cannot be decoded"):
        pack_directory(source, output)
    assert output.read_bytes() == b"previous archive"
    assert list(output.parent.iterdir()) == [output]


def test_pack_rejects_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist or is not a folder"):
        pack_directory(tmp_path / "nope", tmp_path / "out.zip")


def test_pack_rejects_unquoted_comma_in_caption(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "a.jpg")
    (source / "captions.csv").write_text('image,caption\na.jpg,a red circle, on white\na.jpg,"a red, round circle"\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"captions\.csv line 2: The row has 1 more field\(s\).*Put the caption in double quotes"):
        pack_directory(source, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()
