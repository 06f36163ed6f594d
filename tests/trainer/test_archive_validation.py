"""Tests of reading dataset archives (archive.py) and validating them (validation.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from kubeclip.trainer.data import validation
from kubeclip.trainer.data.archive import find_jsonl_member, open_archive, read_jsonl_lines
from kubeclip.trainer.data.validation import DatasetProblem, validate_archive
from kubeclip.trainer.errors import DatasetError

SAMPLE_ZIP = Path(__file__).parents[2] / ".." / "shared" / "data" / "captions-sample" / "captions-sample.zip"


def jpeg_bytes(size: tuple[int, int] = (32, 24), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def line(image: object, captions: object = ("a red square", "a small red picture"), **extra: object) -> str:
    record = {"image": image, "captions": list(captions) if isinstance(captions, tuple) else captions, **extra}
    return json.dumps(record)


def make_archive(
    tmp_path: Path,
    jsonl: str | bytes | None,
    images: dict[str, bytes] | None = None,
    jsonl_name: str = "captions.jsonl",
) -> Path:
    zip_path = tmp_path / "dataset.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        if jsonl is not None:
            archive.writestr(jsonl_name, jsonl.encode("utf-8") if isinstance(jsonl, str) else jsonl)
        for name, data in (images or {}).items():
            archive.writestr(name, data)
    return zip_path


def one_problem(report: validation.ValidationReport, code: str) -> DatasetProblem:
    matching = [problem for problem in report.problems if problem.code == code]
    assert len(matching) == 1, f"expected one {code} problem, got {report.problems}"
    return matching[0]


# --- archive.py -------------------------------------------------------------------


def test_open_archive_rejects_non_zip(tmp_path: Path) -> None:
    path = tmp_path / "data.zip"
    path.write_text("not a zip")
    with pytest.raises(DatasetError, match=r"data\.zip is not a valid ZIP file.*Fix:"):
        open_archive(path)


def test_open_archive_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing\.zip does not exist.*Fix:"):
        open_archive(tmp_path / "missing.zip")


def test_find_jsonl_requires_one_at_root(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, None, {"images/a.jpg": jpeg_bytes()})
    with open_archive(zip_path) as archive, pytest.raises(DatasetError, match=r"no \.jsonl file at its root.*Fix: add a JSONL"):
        find_jsonl_member(archive)


def test_find_jsonl_names_nested_file(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, "{}", jsonl_name="dataset/captions.jsonl")
    with open_archive(zip_path) as archive, pytest.raises(DatasetError, match=r"inside folders: dataset/captions\.jsonl.*Fix: create the archive from inside"):
        find_jsonl_member(archive)


def test_find_jsonl_rejects_two_at_root(tmp_path: Path) -> None:
    zip_path = tmp_path / "two.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("a.jsonl", "")
        archive.writestr("b.JSONL", "")
    with open_archive(zip_path) as archive, pytest.raises(DatasetError, match=r"2 JSONL files at its root \(a\.jsonl, b\.JSONL\).*Fix:"):
        find_jsonl_member(archive)


def test_read_jsonl_lines_keeps_raw_bytes(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, b"first\r\nsecond\n\xff")
    with open_archive(zip_path) as archive:
        lines = list(read_jsonl_lines(archive, "captions.jsonl"))
    assert lines == [(1, b"first\r\n"), (2, b"second\n"), (3, b"\xff")]


# --- validation.py: valid input ----------------------------------------------------


def test_valid_archive_has_samples_in_order(tmp_path: Path) -> None:
    jsonl = "\n".join([line("images/b.jpg", ["  a blue square "]), line("images/a.jpg")]) + "\n"
    zip_path = make_archive(tmp_path, jsonl, {"images/a.jpg": jpeg_bytes(), "images/b.jpg": jpeg_bytes(color="blue")})
    report = validate_archive(zip_path)
    assert report.is_valid
    assert report.problems == ()
    assert report.jsonl_member == "captions.jsonl"
    assert [sample.image for sample in report.samples] == ["images/b.jpg", "images/a.jpg"]
    assert report.samples[0] == validation.Sample("images/b.jpg", ("a blue square",), 1)
    assert report.caption_count == 3
    assert report.image_sizes["images/a.jpg"] == (32, 24)


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    jsonl = line("a.jpg") + "\r\n" + line("b.jpg") + "\r\n"
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()}))
    assert report.problems == ()
    assert len(report.samples) == 2


def test_dot_slash_path_resolves_to_member(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("./images//a.jpg"), {"images/a.jpg": jpeg_bytes()}))
    assert report.problems == ()
    assert report.samples[0].image == "images/a.jpg"


# --- validation.py: one test per problem code ----------------------------------------


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    jsonl = line("a.jpg") + '\n{"image": "b.jpg", "captions": ["x"]\n'
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.INVALID_JSON)
    assert problem.line_number == 2
    assert "column 37" in problem.message
    assert str(problem).startswith("captions.jsonl line 2: The line is not valid JSON")
    assert "Fix: Write the line as one JSON object" in str(problem)
    assert [sample.image for sample in report.samples] == ["a.jpg"]


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, '["a.jpg", "a cat"]\nnull\n'))
    problems = [problem for problem in report.problems if problem.code == validation.NOT_AN_OBJECT]
    assert [problem.message for problem in problems] == [
        "The line is a JSON array, not an object.",
        "The line is a JSON null, not an object.",
    ]
    assert [problem.line_number for problem in problems] == [1, 2]


def test_duplicate_key_is_invalid(tmp_path: Path) -> None:
    jsonl = '{"image": "a.jpg", "image": "b.jpg", "captions": ["x"]}'
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.DUPLICATE_KEY)
    assert "'image'" in problem.message
    assert report.samples == ()


@pytest.mark.parametrize(
    ("record", "code", "message"),
    [
        ({"captions": ["x"]}, validation.MISSING_IMAGE, 'no "image" key'),
        ({"image": 7, "captions": ["x"]}, validation.IMAGE_NOT_STRING, '"image" is a number'),
        ({"image": "  ", "captions": ["x"]}, validation.IMAGE_EMPTY, '"image" is an empty string'),
        ({"image": "a.jpg"}, validation.MISSING_CAPTIONS, 'no "captions" key'),
        ({"image": "a.jpg", "captions": {"text": "x"}}, validation.CAPTIONS_NOT_LIST, '"captions" is a object'),
        ({"image": "a.jpg", "captions": []}, validation.CAPTIONS_EMPTY, '"captions" is an empty array'),
        ({"image": "a.jpg", "captions": ["ok", 3]}, validation.CAPTION_NOT_STRING, "Caption 1 (counted from 0) is a number"),
        ({"image": "a.jpg", "captions": ["ok", " \t"]}, validation.CAPTION_EMPTY, "Caption 1 (counted from 0) is empty"),
    ],
)
def test_field_problems(tmp_path: Path, record: dict[str, object], code: str, message: str) -> None:
    report = validate_archive(make_archive(tmp_path, json.dumps(record), {"a.jpg": jpeg_bytes()}))
    problem = one_problem(report, code)
    assert message in problem.message
    assert problem.line_number == 1
    assert problem.member == "captions.jsonl"
    assert problem.fix
    assert not report.is_valid
    assert report.samples == ()


def test_singular_caption_key_gets_rename_fix(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, json.dumps({"image": "a.jpg", "caption": "a cat"}), {"a.jpg": jpeg_bytes()}))
    assert 'Rename the key "caption" to "captions"' in one_problem(report, validation.MISSING_CAPTIONS).fix
    assert "'caption'" in one_problem(report, validation.UNKNOWN_KEY).message


def test_caption_string_gets_array_fix(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, json.dumps({"image": "a.jpg", "captions": "a cat"}), {"a.jpg": jpeg_bytes()}))
    assert 'Put the caption in an array: "captions": ["a cat"]' in one_problem(report, validation.CAPTIONS_NOT_LIST).fix


def test_unknown_key_is_warning_only(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("a.jpg", split="train"), {"a.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.UNKNOWN_KEY)
    assert problem.is_warning
    assert "'split'" in problem.message
    assert report.is_valid
    assert len(report.samples) == 1


@pytest.mark.parametrize(
    ("path", "code", "fix"),
    [
        ("/images/a.jpg", validation.ABSOLUTE_PATH, "relative to the archive root"),
        ("C:/data/a.jpg", validation.ABSOLUTE_PATH, "relative to the archive root"),
        ("../a.jpg", validation.PATH_ESCAPES_ARCHIVE, "without '..'"),
        ("images/../../a.jpg", validation.PATH_ESCAPES_ARCHIVE, "without '..'"),
        ("images\\a.jpg", validation.BACKSLASH_IN_PATH, "Use forward slashes: 'images/a.jpg'"),
    ],
)
def test_unsafe_image_paths(tmp_path: Path, path: str, code: str, fix: str) -> None:
    report = validate_archive(make_archive(tmp_path, line(path), {"images/a.jpg": jpeg_bytes()}))
    problem = one_problem(report, code)
    assert repr(path) in problem.message
    assert fix in problem.fix
    assert report.samples == ()


@pytest.mark.parametrize(
    ("written", "member", "suggestion"),
    [
        ("images/photo.jpg", "Images/Photo.JPG", "Did you mean 'Images/Photo.JPG'?"),
        ("images/photo.jpg", "dataset/images/photo.jpg", "Did you mean 'dataset/images/photo.jpg'?"),
        ("dataset/images/photo.jpg", "images/photo.jpg", "Did you mean 'images/photo.jpg'?"),
    ],
)
def test_missing_image_suggests_near_match(tmp_path: Path, written: str, member: str, suggestion: str) -> None:
    report = validate_archive(make_archive(tmp_path, line(written), {member: jpeg_bytes()}))
    problem = one_problem(report, validation.IMAGE_NOT_FOUND)
    assert f"Image {written!r} is not in the archive." == problem.message
    assert suggestion in problem.fix


def test_missing_image_without_near_match(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("images/cat.jpg"), {"images/dog.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.IMAGE_NOT_FOUND)
    assert "Did you mean" not in problem.fix
    assert "Add the image to the archive under this path" in problem.fix


def test_directory_entry_is_not_an_image(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, line("images/"), {"images/": b"", "images/a.jpg": jpeg_bytes()})
    report = validate_archive(zip_path)
    one_problem(report, validation.IMAGE_NOT_FOUND)


def test_duplicate_image_keeps_first_line(tmp_path: Path) -> None:
    jsonl = "\n".join([line("a.jpg"), line("b.jpg"), line("./a.jpg")])
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.DUPLICATE_IMAGE)
    assert problem.line_number == 3
    assert "already listed on line 1" in problem.message
    assert "Move this line's captions into line 1" in problem.fix
    assert [sample.line_number for sample in report.samples] == [1, 2]


def test_undecodable_image_names_member(tmp_path: Path) -> None:
    truncated = jpeg_bytes((64, 64))[:200]
    jsonl = "\n".join([line("images/text.jpg"), line("images/cut.jpg"), line("images/ok.jpg")])
    images = {"images/text.jpg": b"this is not an image", "images/cut.jpg": truncated, "images/ok.jpg": jpeg_bytes()}
    report = validate_archive(make_archive(tmp_path, jsonl, images))
    problems = [problem for problem in report.problems if problem.code == validation.IMAGE_DECODE_FAILED]
    assert [problem.member for problem in problems] == ["images/text.jpg", "images/cut.jpg"]
    assert str(problems[0]).startswith("images/text.jpg (line 1): The image cannot be decoded")
    assert "Fix: Replace it with a valid JPEG or PNG file" in str(problems[1])
    assert [sample.image for sample in report.samples] == ["images/ok.jpg"]


def test_image_over_pixel_limit(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, line("big.jpg") + "\n" + line("small.jpg"), {"big.jpg": jpeg_bytes((100, 50)), "small.jpg": jpeg_bytes((10, 10))})
    report = validate_archive(zip_path, max_image_pixels=1000)
    problem = one_problem(report, validation.IMAGE_TOO_LARGE)
    assert problem.member == "big.jpg"
    assert "too large (100x50 = 5000 pixels), over the limit of 1000 pixels" in problem.message
    assert [sample.image for sample in report.samples] == ["small.jpg"]


def test_decode_images_false_skips_image_checks(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("a.jpg"), {"a.jpg": b"garbage"}), decode_images=False)
    assert report.problems == ()
    assert report.image_sizes == {}
    assert not report.images_decoded


def test_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("a.jpg") + "\n\n  \n\n", {"a.jpg": jpeg_bytes()}))
    assert report.problems == ()
    assert report.line_count == 1


def test_blank_line_between_records_is_warning(tmp_path: Path) -> None:
    jsonl = line("a.jpg") + "\n\n" + line("b.jpg") + "\n"
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.BLANK_LINE)
    assert problem.line_number == 2
    assert problem.is_warning
    assert len(report.samples) == 2


def test_non_utf8_line_names_byte_offset(tmp_path: Path) -> None:
    jsonl = '{"image": "a.jpg", "captions": ["caf\xe9"]}'.encode("latin-1")
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.INVALID_UTF8)
    assert "byte 0xe9 at byte offset 36" in problem.message
    assert "UTF-8" in problem.fix
    assert report.samples == ()


def test_utf8_bom_is_warning_and_stripped(tmp_path: Path) -> None:
    jsonl = "\ufeff" + line("a.jpg")
    report = validate_archive(make_archive(tmp_path, jsonl, {"a.jpg": jpeg_bytes()}))
    problem = one_problem(report, validation.UTF8_BOM)
    assert problem.is_warning
    assert "without BOM" in problem.fix
    assert len(report.samples) == 1


def test_unlisted_images_are_one_warning(tmp_path: Path) -> None:
    images = {"a.jpg": jpeg_bytes(), "extra1.jpg": jpeg_bytes(), "extra2.png": b"", "README.txt": b"notes"}
    report = validate_archive(make_archive(tmp_path, line("a.jpg"), images))
    problem = one_problem(report, validation.UNLISTED_IMAGES)
    assert problem.message.startswith("2 image files in the archive are not listed in captions.jsonl")
    assert problem.is_warning
    assert report.is_valid


def test_empty_jsonl_is_invalid(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, "\n"))
    problem = one_problem(report, validation.NO_SAMPLES)
    assert str(problem).startswith("captions.jsonl: captions.jsonl has no lines.")
    with pytest.raises(DatasetError, match="has no lines"):
        report.raise_if_invalid(skip_invalid=True)


# --- reporting every problem at once -------------------------------------------------


def broken_archive(tmp_path: Path) -> Path:
    jsonl = "\n".join(
        [
            line("ok.jpg"),
            "{not json",
            line("missing.jpg"),
            line("/abs.jpg"),
            json.dumps({"image": "ok2.jpg", "captions": []}),
            line("bad.jpg"),
            line("ok2.jpg", note="x"),
        ]
    )
    images = {"ok.jpg": jpeg_bytes(), "ok2.jpg": jpeg_bytes(), "bad.jpg": b"\x00\x01"}
    return make_archive(tmp_path, jsonl, images)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    report = validate_archive(broken_archive(tmp_path))
    found = [(problem.line_number, problem.code) for problem in report.problems]
    assert found == [
        (2, validation.INVALID_JSON),
        (3, validation.IMAGE_NOT_FOUND),
        (4, validation.ABSOLUTE_PATH),
        (5, validation.CAPTIONS_EMPTY),
        (6, validation.IMAGE_DECODE_FAILED),
        (7, validation.UNKNOWN_KEY),
    ]
    assert [sample.line_number for sample in report.samples] == [1, 7]
    assert report.invalid_line_count == 5


def test_raise_if_invalid_lists_problems(tmp_path: Path) -> None:
    report = validate_archive(broken_archive(tmp_path))
    with pytest.raises(DatasetError) as caught:
        report.raise_if_invalid()
    message = str(caught.value)
    assert "is invalid: 5 problems on 5 lines." in message
    assert "captions.jsonl line 3: Image 'missing.jpg' is not in the archive." in message
    assert "bad.jpg (line 6): The image cannot be decoded" in message
    assert "skipInvalidSamples in the job spec" in message
    assert "the 2 valid samples only" in message


def test_raise_if_invalid_lists_first_twenty(tmp_path: Path) -> None:
    jsonl = "\n".join(line(f"missing{index}.jpg") for index in range(25))
    report = validate_archive(make_archive(tmp_path, jsonl + "\n" + line("a.jpg"), {"a.jpg": jpeg_bytes()}))
    with pytest.raises(DatasetError) as caught:
        report.raise_if_invalid()
    message = str(caught.value)
    assert "missing19.jpg" in message
    assert "missing20.jpg" not in message
    assert "... and 5 more problems." in message


def test_skip_invalid_logs_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = validate_archive(broken_archive(tmp_path))
    report.raise_if_invalid(skip_invalid=True)
    assert "2 of 7 lines are valid samples, and 5 lines are skipped." in caplog.text


def test_summary_counts_per_code(tmp_path: Path) -> None:
    report = validate_archive(broken_archive(tmp_path))
    assert report.summary().splitlines() == [
        "2 of 7 lines are valid samples, and 5 lines are skipped.",
        "Errors (line skipped):",
        "  absolute-path: 1",
        "  captions-empty: 1",
        "  image-decode-failed: 1",
        "  image-not-found: 1",
        "  invalid-json: 1",
        "Warnings (sample kept):",
        "  unknown-key: 1",
    ]


def test_valid_report_does_not_raise(tmp_path: Path) -> None:
    report = validate_archive(make_archive(tmp_path, line("a.jpg"), {"a.jpg": jpeg_bytes()}))
    report.raise_if_invalid()
    assert report.to_dict()["valid"] is True


# --- the shared real dataset -----------------------------------------------------------


@pytest.mark.skipif(not SAMPLE_ZIP.is_file(), reason=f"the captions-sample dataset is not at {SAMPLE_ZIP}")
def test_captions_sample_is_valid() -> None:
    report = validate_archive(SAMPLE_ZIP)
    assert report.problems == ()
    assert len(report.samples) == 1500
    assert report.caption_count == 7498
    assert len(report.image_sizes) == 1500
