"""Pack a folder of images and captions into a valid dataset archive.

``kubeclip dataset pack`` calls ``pack_directory``. The folder contains images and
one captions file. That is either a JSONL file in the upload format, or
``captions.csv`` / ``captions.tsv`` with the header row ``image,caption`` and one
row per caption. Rows of the same image become one record. Image paths in the
captions file are relative to the file's folder.

The archive contains ``captions.jsonl`` at its root and the listed images, under
their paths relative to the source folder. Images are stored as they are,
without recompression. Entries are sorted with fixed timestamps, so the same
input gives the same bytes. The archive is written to a temporary file,
validated, and only then moved to the output path.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import posixpath
from collections.abc import Iterator
from pathlib import Path

from kubeclip.trainer.data import archive as archive_io
from kubeclip.trainer.data.validation import (
    CAPTION_EMPTY,
    IMAGE_EMPTY,
    IMAGE_NOT_FOUND,
    IMAGE_SUFFIXES,
    DatasetProblem,
    JsonlRecord,
    ValidationReport,
    format_problems,
    parse_jsonl,
    validate_archive,
)
from kubeclip.trainer.errors import DatasetError

logger = logging.getLogger(__name__)

#: Name of the JSONL member in every packed archive.
PACKED_JSONL_NAME = "captions.jsonl"
#: Caption table file names looked for when no captions file is given, with their delimiters.
#: Problem code of a table row with more fields than the header.
TOO_MANY_FIELDS = "too-many-fields"
CAPTION_TABLES = {"captions.csv": ",", "captions.tsv": "\t"}
_TABLE_COLUMNS = ("image", "caption")


@dataclasses.dataclass(frozen=True)
class PackResult:
    """Summary of an archive written by ``pack_directory``."""

    output_zip: Path
    image_count: int
    caption_count: int
    archive_bytes: int
    #: Image files in the source folder that the captions file does not list, which are not packed.
    unlisted_images: tuple[str, ...]
    #: Validation of the written archive, which has no errors but may have warnings.
    report: ValidationReport


def pack_directory(source_dir: Path, output_zip: Path, *, captions_file: str | None = None) -> PackResult:
    """Build a dataset archive at ``output_zip`` from ``source_dir``.

    ``captions_file`` is a path relative to ``source_dir``. Without it, the folder
    must contain exactly one ``*.jsonl`` file or a ``captions.csv`` /
    ``captions.tsv`` at its top level. Raises DatasetError listing every problem
    of the captions file, or of the written archive, in which case no archive is
    left at ``output_zip``.
    """
    source_dir = _require_directory(source_dir)
    captions_path = find_captions_file(source_dir, captions_file)
    records = read_caption_records(captions_path)
    image_files = _resolve_image_files(records, captions_path, source_dir)
    entries: dict[str, bytes | Path] = {PACKED_JSONL_NAME: _jsonl_bytes(records, image_files)}
    entries.update({archive_name: path for archive_name, path in image_files.values()})
    with archive_io.atomic_output(output_zip) as temp_path:
        archive_io.write_archive(temp_path, entries)
        report = validate_archive(temp_path)
        _require_valid_archive(report, source_dir)
    logger.info("packed %d images from %s into %s", len(records), source_dir, output_zip)
    return PackResult(
        output_zip=output_zip,
        image_count=len(records),
        caption_count=sum(len(record.captions) for record in records),
        archive_bytes=output_zip.stat().st_size,
        unlisted_images=_unlisted_images(source_dir, {path for _, path in image_files.values()}),
        report=dataclasses.replace(report, zip_path=output_zip),
    )


def _require_valid_archive(report: ValidationReport, source_dir: Path) -> None:
    if not report.is_valid:
        raise DatasetError(
            f"the archive packed from {source_dir} is invalid, so it was not written:\n{format_problems(report.errors)}\n"
            "Fix the images or captions named above and pack again."
        )


def _require_directory(source_dir: Path) -> Path:
    if not source_dir.is_dir():
        raise DatasetError(f"source folder {source_dir} does not exist or is not a folder. Fix: pass the folder that contains the images.")
    return source_dir.resolve()


def find_captions_file(source_dir: Path, captions_file: str | None) -> Path:
    """Return the captions file: the one given, else the single ``*.jsonl``, ``captions.csv`` or ``captions.tsv``."""
    if captions_file is not None:
        path = (source_dir / captions_file).resolve()
        if not path.is_file():
            raise DatasetError(f"captions file {path} does not exist. Fix: pass a path relative to {source_dir}.")
        return path
    candidates = sorted(path for path in source_dir.iterdir() if path.is_file() and _is_captions_file_name(path.name))
    if len(candidates) != 1:
        found = ", ".join(path.name for path in candidates) or "none"
        raise DatasetError(
            f"source folder {source_dir} must contain exactly one captions file (*.jsonl, captions.csv or captions.tsv) "
            f"at its top level, but found: {found}. Fix: keep one of them, or choose one with --captions-file."
        )
    return candidates[0]


def _is_captions_file_name(name: str) -> bool:
    return name.lower().endswith(archive_io.JSONL_SUFFIX) or name.lower() in CAPTION_TABLES


def read_caption_records(captions_path: Path) -> list[JsonlRecord]:
    """Read the captions file into one record per image, or raise DatasetError listing all its problems."""
    if captions_path.name.lower().endswith(archive_io.JSONL_SUFFIX):
        records, problems = _read_jsonl_records(captions_path)
    else:
        records, problems = _read_table_records(captions_path)
    for warning in (problem for problem in problems if problem.is_warning):
        logger.warning("captions file %s: %s", captions_path, warning)
    errors = [problem for problem in problems if not problem.is_warning]
    if errors:
        raise DatasetError(f"captions file {captions_path} has {len(errors)} problems:\n{format_problems(errors)}")
    if not records:
        raise DatasetError(f"captions file {captions_path} lists no images. Fix: add one record per image.")
    return records


def _read_jsonl_records(captions_path: Path) -> tuple[list[JsonlRecord], list[DatasetProblem]]:
    with captions_path.open("rb") as stream:
        parsed = parse_jsonl(enumerate(stream, start=1), captions_path.name)
    return parsed.records, parsed.problems


def _read_table_records(captions_path: Path) -> tuple[list[JsonlRecord], list[DatasetProblem]]:
    """Group the rows of a CSV or TSV caption table by image, keeping the order of first appearance."""
    captions_by_image: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    problems: list[DatasetProblem] = []
    for line_number, written_image, caption in _table_rows(captions_path, problems):
        # Spellings of one path, such as "images\\a.jpg" and "./images/a.jpg", form one record.
        image = posixpath.normpath(written_image.replace("\\", "/"))
        captions_by_image.setdefault(image, []).append(caption)
        first_line.setdefault(image, line_number)
    records = [JsonlRecord(first_line[image], image, tuple(captions)) for image, captions in captions_by_image.items()]
    return records, problems


def _table_rows(captions_path: Path, problems: list[DatasetProblem]) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line_number, image, caption)`` for every valid row, and add a problem for every other row."""
    delimiter = CAPTION_TABLES.get(captions_path.name.lower(), "\t" if captions_path.suffix.lower() == ".tsv" else ",")
    # utf-8-sig accepts the byte order mark that spreadsheet programs write.
    with captions_path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.DictReader(stream, delimiter=delimiter)
        _require_table_columns(reader.fieldnames, captions_path)
        for row in reader:
            image = (row.get("image") or "").strip()
            caption = (row.get("caption") or "").strip()
            problem = _extra_fields_problem(row, delimiter, reader.line_num, captions_path.name)
            problem = problem or _table_row_problem(image, caption, reader.line_num, captions_path.name)
            if problem is not None:
                problems.append(problem)
            else:
                yield reader.line_num, image, caption


def _require_table_columns(fieldnames: list[str] | None, captions_path: Path) -> None:
    missing = [column for column in _TABLE_COLUMNS if column not in (fieldnames or [])]
    if missing:
        raise DatasetError(
            f"caption table {captions_path} has the header {fieldnames} and lacks the column(s) {missing}. "
            "Fix: make the first row the header 'image,caption' (tab-separated in a .tsv file)."
        )


def _extra_fields_problem(row: dict, delimiter: str, line_number: int, file_name: str) -> DatasetProblem | None:
    """Reject rows with more fields than the header: a caption with an unquoted delimiter would lose its end."""
    extra = row.get(None)
    if not extra:
        return None
    separator = "comma" if delimiter == "," else "tab"
    return DatasetProblem(
        TOO_MANY_FIELDS,
        line_number,
        file_name,
        f"The row has {len(extra)} more field(s) than the header 'image,caption', so the caption would be cut at a {separator}.",
        'Put the caption in double quotes, such as "a red, round circle".',
    )


def _table_row_problem(image: str, caption: str, line_number: int, file_name: str) -> DatasetProblem | None:
    if not image:
        return DatasetProblem(IMAGE_EMPTY, line_number, file_name, "The row has no image path.", "Write the image path in the 'image' column.")
    if not caption:
        return DatasetProblem(CAPTION_EMPTY, line_number, file_name, "The row has no caption.", "Write the caption, or delete the row.")
    return None


def _resolve_image_files(records: list[JsonlRecord], captions_path: Path, source_dir: Path) -> dict[int, tuple[str, Path]]:
    """Map each record's line to ``(archive name, file)``, or raise DatasetError listing every bad path."""
    image_files: dict[int, tuple[str, Path]] = {}
    problems: list[DatasetProblem] = []
    for record in records:
        resolved = _resolve_image_file(record, captions_path, source_dir)
        if isinstance(resolved, DatasetProblem):
            problems.append(resolved)
        else:
            image_files[record.line_number] = resolved
    if problems:
        raise DatasetError(f"captions file {captions_path} lists {len(problems)} images that cannot be packed:\n{format_problems(problems)}")
    return image_files


def _resolve_image_file(record: JsonlRecord, captions_path: Path, source_dir: Path) -> tuple[str, Path] | DatasetProblem:
    # Backslashes are accepted here and written as forward slashes, for captions files made on Windows.
    # Absolute paths and ".." are fine as long as the file is inside the source folder.
    written = record.image.replace("\\", "/")
    path = (captions_path.parent / written).resolve()
    if not path.is_relative_to(source_dir):
        fix = f"Move the image into {source_dir} and write its path relative to the captions file."
        return DatasetProblem(IMAGE_NOT_FOUND, record.line_number, captions_path.name, f"Image {record.image!r} is outside the source folder.", fix)
    if not path.is_file():
        fix = f"Add the file {path}, or correct the path. Paths are relative to the captions file's folder."
        return DatasetProblem(IMAGE_NOT_FOUND, record.line_number, captions_path.name, f"Image {record.image!r} does not exist.", fix)
    return path.relative_to(source_dir).as_posix(), path


def _jsonl_bytes(records: list[JsonlRecord], image_files: dict[int, tuple[str, Path]]) -> bytes:
    lines = []
    for record in records:
        archive_name = image_files[record.line_number][0]
        lines.append(json.dumps({"image": archive_name, "captions": list(record.captions)}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _unlisted_images(source_dir: Path, packed: set[Path]) -> tuple[str, ...]:
    candidates = (path for path in source_dir.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    unlisted = (path for path in candidates if path.resolve() not in packed)
    return tuple(sorted(path.relative_to(source_dir).as_posix() for path in unlisted))
