"""Validate a dataset archive and report every problem in it, not only the first.

``validate_archive`` checks each JSONL line (encoding, JSON syntax, the ``image`` and
``captions`` fields), each image path (safe, present, listed once) and, optionally,
that each image decodes within the pixel limit. The trainer calls it before
training and then ``ValidationReport.raise_if_invalid``. ``kubeclip dataset
validate`` prints the report, and ``pack`` checks the archives it writes.

Decisions about inputs the format leaves open:

* Blank lines at the end of the file are ignored. A blank line followed by more
  lines is a warning, because it often means a line was lost while editing.
* A UTF-8 byte order mark is a warning and is ignored.
* Keys other than ``image`` and ``captions`` are a warning, and the sample is kept.
* ``./`` and repeated slashes in an image path are normalised, so
  ``./images/a.jpg`` refers to the member ``images/a.jpg``.
* Captions are stored stripped of surrounding whitespace.
* When an image is listed on two lines, the first line is kept and the second is invalid.

A warning never makes a sample invalid, and every other problem does.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import json
import logging
import posixpath
import re
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubeclip.trainer.data import archive as archive_io
from kubeclip.trainer.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, ImageTooLargeError, check_image
from kubeclip.trainer.errors import DatasetError

logger = logging.getLogger(__name__)

# Problem codes. Each one names one kind of problem, and reports count problems per code.
INVALID_UTF8 = "invalid-utf8"
UTF8_BOM = "utf8-bom"
BLANK_LINE = "blank-line"
INVALID_JSON = "invalid-json"
DUPLICATE_KEY = "duplicate-key"
NOT_AN_OBJECT = "not-an-object"
UNKNOWN_KEY = "unknown-key"
MISSING_IMAGE = "missing-image"
IMAGE_NOT_STRING = "image-not-string"
IMAGE_EMPTY = "image-empty"
MISSING_CAPTIONS = "missing-captions"
CAPTIONS_NOT_LIST = "captions-not-list"
CAPTIONS_EMPTY = "captions-empty"
CAPTION_NOT_STRING = "caption-not-string"
CAPTION_EMPTY = "caption-empty"
ABSOLUTE_PATH = "absolute-path"
PATH_ESCAPES_ARCHIVE = "path-escapes-archive"
BACKSLASH_IN_PATH = "backslash-in-path"
IMAGE_NOT_FOUND = "image-not-found"
DUPLICATE_IMAGE = "duplicate-image"
IMAGE_UNREADABLE = "image-unreadable"
IMAGE_DECODE_FAILED = "image-decode-failed"
IMAGE_TOO_LARGE = "image-too-large"
UNLISTED_IMAGES = "unlisted-images"
NO_SAMPLES = "no-samples"

#: Codes that do not make a sample invalid.
WARNING_CODES = frozenset({UTF8_BOM, BLANK_LINE, UNKNOWN_KEY, UNLISTED_IMAGES})
#: Codes whose ``member`` is the image, not the JSONL file.
_IMAGE_MEMBER_CODES = frozenset({IMAGE_UNREADABLE, IMAGE_DECODE_FAILED, IMAGE_TOO_LARGE})
#: How many problems ``raise_if_invalid`` lists before it only counts the rest.
MAX_LISTED_PROBLEMS = 20

KNOWN_KEYS = ("image", "captions")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
#: Returned by ``_load_json`` for a line that is not valid JSON (``None`` is JSON ``null``).
_INVALID = object()


@dataclasses.dataclass(frozen=True)
class Sample:
    """One valid image with its captions. ``image`` is the archive member name."""

    image: str
    captions: tuple[str, ...]
    #: Line of the JSONL file the sample came from, counted from 1.
    line_number: int


@dataclasses.dataclass(frozen=True)
class DatasetProblem:
    """One problem found in an archive, with where it is and how to fix it."""

    #: One of the problem codes above, such as ``image-not-found``.
    code: str
    #: JSONL line the problem is on, counted from 1, or None for archive-wide problems.
    line_number: int | None
    #: The JSONL file, or the image for image problems, or None for archive-wide problems.
    member: str | None
    message: str
    fix: str

    @property
    def is_warning(self) -> bool:
        return self.code in WARNING_CODES

    @property
    def location(self) -> str:
        """Where the problem is, such as ``captions.jsonl line 12`` or ``images/a.jpg (line 12)``."""
        if self.member is not None and self.line_number is not None:
            if self.code in _IMAGE_MEMBER_CODES:
                return f"{self.member} (line {self.line_number})"
            return f"{self.member} line {self.line_number}"
        if self.member is not None:
            return self.member
        if self.line_number is not None:
            return f"line {self.line_number}"
        return "archive"

    def __str__(self) -> str:
        return f"{self.location}: {self.message} Fix: {self.fix}"


@dataclasses.dataclass(frozen=True)
class JsonlRecord:
    """A line whose fields are well formed, before its image path is checked."""

    line_number: int
    #: The path exactly as written in the line.
    image: str
    captions: tuple[str, ...]


@dataclasses.dataclass
class JsonlParseResult:
    """The well-formed records of a JSONL file and the problems of the other lines."""

    records: list[JsonlRecord] = dataclasses.field(default_factory=list)
    problems: list[DatasetProblem] = dataclasses.field(default_factory=list)
    #: Lines that are not blank.
    line_count: int = 0


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """The result of ``validate_archive``: the valid samples and every problem found."""

    zip_path: Path
    jsonl_member: str
    #: Valid samples in file order.
    samples: tuple[Sample, ...]
    #: Errors and warnings sorted by line number, archive-wide problems last.
    problems: tuple[DatasetProblem, ...]
    #: Lines of the JSONL file that are not blank.
    line_count: int
    #: Displayed ``(width, height)`` of each decoded image by member name, empty when images were not decoded.
    image_sizes: Mapping[str, tuple[int, int]]
    images_decoded: bool

    @property
    def errors(self) -> tuple[DatasetProblem, ...]:
        return tuple(problem for problem in self.problems if not problem.is_warning)

    @property
    def warnings(self) -> tuple[DatasetProblem, ...]:
        return tuple(problem for problem in self.problems if problem.is_warning)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    @property
    def caption_count(self) -> int:
        return sum(len(sample.captions) for sample in self.samples)

    @property
    def invalid_line_count(self) -> int:
        return len({problem.line_number for problem in self.errors if problem.line_number is not None})

    def raise_if_invalid(self, *, skip_invalid: bool = False) -> None:
        """Raise DatasetError listing the errors, unless there are none or ``skip_invalid`` is set.

        With ``skip_invalid``, the summary is logged as a warning instead, but an
        archive without a single valid sample still raises.
        """
        if self.is_valid:
            return
        if skip_invalid and self.samples:
            logger.warning("dataset %s: %s", self.zip_path, self.summary())
            return
        raise DatasetError(self._error_message(skip_invalid))

    def _error_message(self, skip_invalid: bool) -> str:
        errors = self.errors
        lines = [f"dataset archive {self.zip_path} is invalid: {len(errors)} problems on {self.invalid_line_count} lines."]
        lines += [f"  {problem}" for problem in errors[:MAX_LISTED_PROBLEMS]]
        if len(errors) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(errors) - MAX_LISTED_PROBLEMS} more problems.")
        if skip_invalid:
            lines.append("No valid samples remain after skipping the invalid lines. Fix the problems above.")
        else:
            lines.append(
                f"Fix the problems above, or skip invalid samples (skipInvalidSamples in the job spec, "
                f"--skip-invalid on the command line) to use the {len(self.samples)} valid samples only."
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Describe in a few lines which lines are skipped and why, with counts per problem code."""
        skipped = self.invalid_line_count
        lines = [f"{len(self.samples)} of {self.line_count} lines are valid samples, and {skipped} lines are skipped."]
        lines += _count_lines("Errors (line skipped)", self.errors)
        lines += _count_lines("Warnings (sample kept)", self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-compatible data, without the samples' captions."""
        return {
            "zip_path": str(self.zip_path),
            "jsonl_member": self.jsonl_member,
            "valid": self.is_valid,
            "line_count": self.line_count,
            "sample_count": len(self.samples),
            "caption_count": self.caption_count,
            "invalid_line_count": self.invalid_line_count,
            "images_decoded": self.images_decoded,
            "problems": [dict(dataclasses.asdict(problem), warning=problem.is_warning) for problem in self.problems],
        }


def _count_lines(title: str, problems: tuple[DatasetProblem, ...]) -> list[str]:
    if not problems:
        return []
    counts = collections.Counter(problem.code for problem in problems)
    return [f"{title}:"] + [f"  {code}: {count}" for code, count in sorted(counts.items())]


def format_problems(problems: Iterable[DatasetProblem], limit: int = MAX_LISTED_PROBLEMS) -> str:
    """Render problems one per line, listing at most ``limit`` and counting the rest."""
    problem_list = list(problems)
    lines = [f"  {problem}" for problem in problem_list[:limit]]
    if len(problem_list) > limit:
        lines.append(f"  ... and {len(problem_list) - limit} more problems.")
    return "\n".join(lines)


# --- Parsing the JSONL lines ------------------------------------------------------


def parse_jsonl(lines: Iterable[tuple[int, bytes]], member: str) -> JsonlParseResult:
    """Parse raw JSONL lines into well-formed records, collecting a problem for every bad line.

    ``member`` is the file name used in problem messages.
    """
    result = JsonlParseResult()
    pending_blank_lines: list[int] = []
    for line_number, raw in lines:
        text = _decode_line(raw, line_number, member, result.problems)
        if text is not None and not text.strip():
            pending_blank_lines.append(line_number)
            continue
        _report_blank_lines(pending_blank_lines, member, result.problems)
        result.line_count += 1
        record = None if text is None else parse_jsonl_line(text, line_number, member, result.problems)
        if record is not None:
            result.records.append(record)
    return result


def _decode_line(raw: bytes, line_number: int, member: str, problems: list[DatasetProblem]) -> str | None:
    """Return the line as text without its line ending, or None (and a problem) if it is not UTF-8."""
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    if raw.startswith(codecs.BOM_UTF8):
        problems.append(_bom_problem(line_number, member))
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problems.append(_invalid_utf8_problem(raw, err, line_number, member))
        return None


def _bom_problem(line_number: int, member: str) -> DatasetProblem:
    where = "The file starts" if line_number == 1 else "The line starts"
    return DatasetProblem(
        UTF8_BOM,
        line_number,
        member,
        f"{where} with a UTF-8 byte order mark (BOM), which is ignored.",
        "Save the file as UTF-8 without BOM." if line_number == 1 else "Remove the BOM. It usually means that files were joined together.",
    )


def _invalid_utf8_problem(raw: bytes, err: UnicodeDecodeError, line_number: int, member: str) -> DatasetProblem:
    bad_byte = raw[err.start : err.start + 1].hex()
    return DatasetProblem(
        INVALID_UTF8,
        line_number,
        member,
        f"The line is not valid UTF-8: byte 0x{bad_byte} at byte offset {err.start} ({err.reason}).",
        "Save the JSONL file with UTF-8 encoding (text exported from spreadsheets is often Latin-1 or Windows-1252).",
    )


def _report_blank_lines(blank_lines: list[int], member: str, problems: list[DatasetProblem]) -> None:
    """Add a warning for each blank line that turned out to be followed by more lines."""
    for line_number in blank_lines:
        message = "The line is blank, but more lines follow. It is ignored."
        problems.append(DatasetProblem(BLANK_LINE, line_number, member, message, "Remove the blank line."))
    blank_lines.clear()


def parse_jsonl_line(text: str, line_number: int, member: str, problems: list[DatasetProblem]) -> JsonlRecord | None:
    """Parse one non-blank line and return its record, or None after adding the line's problems."""
    value = _load_json(text, line_number, member, problems)
    if value is _INVALID:
        return None
    if not isinstance(value, dict):
        problems.append(_not_an_object_problem(value, line_number, member))
        return None
    image = _image_field(value, line_number, member, problems)
    captions = _captions_field(value, line_number, member, problems)
    _check_unknown_keys(value, line_number, member, problems)
    if image is None or captions is None:
        return None
    return JsonlRecord(line_number, image, captions)


def _load_json(text: str, line_number: int, member: str, problems: list[DatasetProblem]) -> Any:
    """Return the line's JSON value, or ``_INVALID`` after adding a problem."""
    duplicate_keys: list[str] = []
    try:
        value = json.loads(text, object_pairs_hook=lambda pairs: _build_object(pairs, duplicate_keys))
    except json.JSONDecodeError as err:
        problems.append(_invalid_json_problem(err, line_number, member))
        return _INVALID
    if duplicate_keys:
        problems.append(_duplicate_key_problem(duplicate_keys, line_number, member))
        return _INVALID
    return value


def _build_object(pairs: list[tuple[str, Any]], duplicate_keys: list[str]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicate_keys.extend(sorted({key for key in keys if keys.count(key) > 1}))
    return dict(pairs)


def _invalid_json_problem(err: json.JSONDecodeError, line_number: int, member: str) -> DatasetProblem:
    return DatasetProblem(
        INVALID_JSON,
        line_number,
        member,
        f"The line is not valid JSON: {err.msg} at column {err.colno}.",
        'Write the line as one JSON object, such as {"image": "images/cat.jpg", "captions": ["a cat on a sofa"]}.',
    )


def _duplicate_key_problem(keys: list[str], line_number: int, member: str) -> DatasetProblem:
    return DatasetProblem(
        DUPLICATE_KEY,
        line_number,
        member,
        f"The object has the key(s) {', '.join(repr(key) for key in keys)} more than once.",
        "Keep one of each key, and put all captions in one \"captions\" array.",
    )


def _not_an_object_problem(value: Any, line_number: int, member: str) -> DatasetProblem:
    return DatasetProblem(
        NOT_AN_OBJECT,
        line_number,
        member,
        f"The line is a JSON {_json_type(value)}, not an object.",
        'Write one object per line, such as {"image": "images/cat.jpg", "captions": ["a cat on a sofa"]}.',
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _image_field(obj: dict[str, Any], line_number: int, member: str, problems: list[DatasetProblem]) -> str | None:
    """Return the ``image`` value if it is a non-empty string, or else add a problem and return None."""
    if "image" not in obj:
        problem = (MISSING_IMAGE, 'The object has no "image" key.', 'Add "image" with the image\'s path in the archive.')
    elif not isinstance(obj["image"], str):
        problem = (IMAGE_NOT_STRING, f'"image" is a {_json_type(obj["image"])}, not a string.', 'Write the path as a string, such as "images/cat.jpg".')
    elif not obj["image"].strip():
        problem = (IMAGE_EMPTY, '"image" is an empty string.', "Write the image's path relative to the archive root.")
    else:
        return obj["image"]
    problems.append(DatasetProblem(problem[0], line_number, member, problem[1], problem[2]))
    return None


def _captions_field(obj: dict[str, Any], line_number: int, member: str, problems: list[DatasetProblem]) -> tuple[str, ...] | None:
    """Return the stripped captions if ``captions`` is a list of non-empty strings, or else add problems and return None."""
    if "captions" not in obj:
        problems.append(_missing_captions_problem(obj, line_number, member))
        return None
    captions = obj["captions"]
    if not isinstance(captions, list):
        problems.append(_captions_not_list_problem(captions, line_number, member))
        return None
    if not captions:
        fix = "Add at least one caption. 2 to 5 per image are recommended."
        problems.append(DatasetProblem(CAPTIONS_EMPTY, line_number, member, '"captions" is an empty array.', fix))
        return None
    caption_problems = [problem for index, caption in enumerate(captions) if (problem := _caption_problem(index, caption, line_number, member))]
    problems.extend(caption_problems)
    return None if caption_problems else tuple(caption.strip() for caption in captions)


def _missing_captions_problem(obj: dict[str, Any], line_number: int, member: str) -> DatasetProblem:
    fix = 'Add "captions" with an array of caption strings.'
    if "caption" in obj:
        fix = 'Rename the key "caption" to "captions" and make its value an array of strings.'
    return DatasetProblem(MISSING_CAPTIONS, line_number, member, 'The object has no "captions" key.', fix)


def _captions_not_list_problem(captions: Any, line_number: int, member: str) -> DatasetProblem:
    fix = 'Make "captions" an array of strings.'
    if isinstance(captions, str):
        fix = f'Put the caption in an array: "captions": [{json.dumps(captions)[:60]}].'
    message = f'"captions" is a {_json_type(captions)}, not an array.'
    return DatasetProblem(CAPTIONS_NOT_LIST, line_number, member, message, fix)


def _caption_problem(index: int, caption: Any, line_number: int, member: str) -> DatasetProblem | None:
    if not isinstance(caption, str):
        message = f"Caption {index} (counted from 0) is a {_json_type(caption)}, not a string."
        return DatasetProblem(CAPTION_NOT_STRING, line_number, member, message, "Write every caption as a string.")
    if not caption.strip():
        message = f"Caption {index} (counted from 0) is empty or only whitespace."
        return DatasetProblem(CAPTION_EMPTY, line_number, member, message, "Remove the empty caption or write its text.")
    return None


def _check_unknown_keys(obj: dict[str, Any], line_number: int, member: str, problems: list[DatasetProblem]) -> None:
    unknown = [key for key in obj if key not in KNOWN_KEYS]
    if unknown:
        message = f"Unknown key(s) {', '.join(repr(key) for key in unknown)} are ignored."
        fix = 'Remove them, because only "image" and "captions" are read.'
        problems.append(DatasetProblem(UNKNOWN_KEY, line_number, member, message, fix))


# --- Checking image paths against the archive --------------------------------------


def check_image_path(path: str, line_number: int, member: str) -> DatasetProblem | None:
    """Return a problem if ``path`` is absolute, uses backslashes or leaves the archive root."""
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        message = f"Image path {path!r} is absolute."
        fix = "Write the path relative to the archive root, such as 'images/cat.jpg'."
        return DatasetProblem(ABSOLUTE_PATH, line_number, member, message, fix)
    if "\\" in path:
        message = f"Image path {path!r} contains backslashes."
        fix = f"Use forward slashes: {path.replace(chr(92), '/')!r}."
        return DatasetProblem(BACKSLASH_IN_PATH, line_number, member, message, fix)
    normalized = posixpath.normpath(path)
    if normalized == ".." or normalized.startswith("../"):
        message = f"Image path {path!r} points outside the archive."
        fix = "Put the image inside the archive and write its path relative to the archive root, without '..'."
        return DatasetProblem(PATH_ESCAPES_ARCHIVE, line_number, member, message, fix)
    return None


class _MemberIndex:
    """The archive's file members, with lookups that suggest a near match for a missing path."""

    def __init__(self, members: frozenset[str]) -> None:
        self.members = members
        self._by_lower_case = {name.lower(): name for name in sorted(members)}
        self._by_path_below_first_folder = {name.split("/", 1)[1]: name for name in sorted(members) if "/" in name}

    def suggest(self, path: str) -> str | None:
        """Return a member that differs from ``path`` only by letter case or by one leading folder."""
        candidates = [self._by_lower_case.get(path.lower()), self._by_path_below_first_folder.get(path)]
        if "/" in path:
            below_first_folder = path.split("/", 1)[1]
            candidates.append(below_first_folder if below_first_folder in self.members else None)
        return next((candidate for candidate in candidates if candidate is not None), None)


def _image_not_found_problem(path: str, index: _MemberIndex, line_number: int, member: str) -> DatasetProblem:
    suggestion = index.suggest(path)
    message = f"Image {path!r} is not in the archive."
    if suggestion is not None:
        fix = f"Did you mean {suggestion!r}? Member names are case-sensitive and relative to the archive root, so write the path exactly as stored."
    else:
        fix = "Add the image to the archive under this path, or correct the path in the line."
    return DatasetProblem(IMAGE_NOT_FOUND, line_number, member, message, fix)


def _duplicate_image_problem(image: str, first_line: int, line_number: int, member: str) -> DatasetProblem:
    message = f"Image {image!r} is already listed on line {first_line}, so this line is invalid."
    fix = f"Move this line's captions into line {first_line} and delete this line. Each image may appear on one line only."
    return DatasetProblem(DUPLICATE_IMAGE, line_number, member, message, fix)


def resolve_records(records: Iterable[JsonlRecord], members: frozenset[str], jsonl_member: str) -> tuple[list[Sample], list[DatasetProblem]]:
    """Match records to archive members and return the samples whose image exists and is listed once."""
    index = _MemberIndex(members)
    first_line_of_image: dict[str, int] = {}
    samples: list[Sample] = []
    problems: list[DatasetProblem] = []
    for record in records:
        sample, problem = _resolve_record(record, index, first_line_of_image, jsonl_member)
        if problem is not None:
            problems.append(problem)
        if sample is not None:
            samples.append(sample)
    return samples, problems


def _resolve_record(
    record: JsonlRecord, index: _MemberIndex, first_line_of_image: dict[str, int], jsonl_member: str
) -> tuple[Sample | None, DatasetProblem | None]:
    path_problem = check_image_path(record.image, record.line_number, jsonl_member)
    if path_problem is not None:
        return None, path_problem
    image = posixpath.normpath(record.image)
    if image not in index.members:
        return None, _image_not_found_problem(record.image, index, record.line_number, jsonl_member)
    if image in first_line_of_image:
        return None, _duplicate_image_problem(image, first_line_of_image[image], record.line_number, jsonl_member)
    first_line_of_image[image] = record.line_number
    return Sample(image, record.captions, record.line_number), None


def _unlisted_images_problem(members: frozenset[str], listed: set[str], jsonl_member: str) -> DatasetProblem | None:
    unlisted = sorted(name for name in members - listed if name.lower().endswith(IMAGE_SUFFIXES))
    if not unlisted:
        return None
    examples = ", ".join(repr(name) for name in unlisted[:3])
    message = f"{len(unlisted)} image files in the archive are not listed in {jsonl_member} and are ignored, such as {examples}."
    fix = f"Add a line for each image to {jsonl_member}, or remove the images from the archive."
    return DatasetProblem(UNLISTED_IMAGES, None, None, message, fix)


def _no_samples_problem(jsonl_member: str) -> DatasetProblem:
    message = f"{jsonl_member} has no lines."
    fix = 'Add one JSON object per line, such as {"image": "images/cat.jpg", "captions": ["a cat on a sofa"]}.'
    return DatasetProblem(NO_SAMPLES, None, jsonl_member, message, fix)


# --- Decoding the images ----------------------------------------------------------


def check_sample_images(
    archive: zipfile.ZipFile, samples: list[Sample], max_image_pixels: int
) -> tuple[list[Sample], list[DatasetProblem], dict[str, tuple[int, int]]]:
    """Decode every sample's image and return the samples that decode, the problems and the image sizes."""
    valid: list[Sample] = []
    problems: list[DatasetProblem] = []
    sizes: dict[str, tuple[int, int]] = {}
    for sample in samples:
        size, problem = _check_sample_image(archive, sample, max_image_pixels)
        if problem is not None:
            problems.append(problem)
            continue
        valid.append(sample)
        sizes[sample.image] = size
    return valid, problems, sizes


def _check_sample_image(archive: zipfile.ZipFile, sample: Sample, max_image_pixels: int) -> tuple[tuple[int, int], DatasetProblem | None]:
    try:
        data = archive_io.read_member(archive, sample.image)
    except DatasetError as err:
        message = f"The image member cannot be read from the archive: {err.__cause__}."
        fix = "Recreate the archive without encryption, using the store or deflate compression method."
        return (0, 0), DatasetProblem(IMAGE_UNREADABLE, sample.line_number, sample.image, message, fix)
    try:
        return check_image(data, member=sample.image, max_pixels=max_image_pixels), None
    except ImageDecodeError as err:
        code = IMAGE_TOO_LARGE if isinstance(err, ImageTooLargeError) else IMAGE_DECODE_FAILED
        message = f"The image {err.reason}"
        return (0, 0), DatasetProblem(code, sample.line_number, sample.image, message, err.fix)


# --- The whole archive --------------------------------------------------------------


def validate_archive(
    zip_path: Path, *, decode_images: bool = True, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> ValidationReport:
    """Check a dataset archive and return a report of its valid samples and all its problems.

    Raises DatasetError only when nothing can be checked: the file is not a ZIP, or
    it has no single JSONL file at its root. With ``decode_images``, every listed
    image is decoded (JPEGs at 1/8 scale) and checked against ``max_image_pixels``.
    """
    started = time.perf_counter()
    with archive_io.open_archive(zip_path) as archive:
        jsonl_member = archive_io.find_jsonl_member(archive)
        members = archive_io.file_members(archive)
        parsed = parse_jsonl(archive_io.read_jsonl_lines(archive, jsonl_member), jsonl_member)
        samples, path_problems = resolve_records(parsed.records, members, jsonl_member)
        image_problems: list[DatasetProblem] = []
        sizes: dict[str, tuple[int, int]] = {}
        if decode_images:
            samples, image_problems, sizes = check_sample_images(archive, samples, max_image_pixels)
    problems = parsed.problems + path_problems + image_problems + _archive_problems(parsed, members, jsonl_member)
    report = ValidationReport(zip_path, jsonl_member, tuple(samples), tuple(sorted(problems, key=_problem_order)), parsed.line_count, sizes, decode_images)
    logger.info(
        "validated %s: %d of %d lines valid, %d errors, %d warnings, in %.2f s",
        zip_path, len(report.samples), report.line_count, len(report.errors), len(report.warnings), time.perf_counter() - started,
    )
    return report


def _archive_problems(parsed: JsonlParseResult, members: frozenset[str], jsonl_member: str) -> list[DatasetProblem]:
    problems = []
    listed = {posixpath.normpath(record.image) for record in parsed.records}
    unlisted = _unlisted_images_problem(members, listed, jsonl_member)
    if unlisted is not None:
        problems.append(unlisted)
    if parsed.line_count == 0:
        problems.append(_no_samples_problem(jsonl_member))
    return problems


def _problem_order(problem: DatasetProblem) -> tuple[int, int]:
    """Sort by line with archive-wide problems last. ``sorted`` is stable, so it keeps the order within a line."""
    return (0, problem.line_number) if problem.line_number is not None else (1, 0)
