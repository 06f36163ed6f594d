"""Read and write dataset ZIP archives.

A dataset archive contains images and exactly one JSONL file at its root. This module
opens an archive, finds that JSONL member, reads its lines and member bytes, and
writes new archives deterministically. ``validation`` and ``stats`` call it to read
uploads, ``pack`` and ``builtin`` to write them. Every failure raises
``DatasetError`` naming the archive or member and the fix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from kubeclip.trainer.errors import DatasetError

JSONL_SUFFIX = ".jsonl"
#: File-name suffixes of formats that are already compressed, so they are stored as is.
_COMPRESSED_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".zip", ".gz")
#: The earliest timestamp a ZIP entry can hold. Every entry gets it, so output is reproducible.
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
#: "Unix" as the creating system, so the permission bits below mean the same everywhere.
_UNIX_CREATE_SYSTEM = 3
_FILE_MODE = 0o644
#: Errors zipfile raises for a damaged, encrypted or unsupported member.
_MEMBER_READ_ERRORS = (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, OSError)


def open_archive(zip_path: Path) -> zipfile.ZipFile:
    """Open a dataset archive for reading, or raise DatasetError if it is missing or not a ZIP."""
    if not zip_path.is_file():
        raise DatasetError(f"dataset archive {zip_path} does not exist or is not a file. Fix: pass the path of a .zip file.")
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise DatasetError(
            f"dataset archive {zip_path} is not a valid ZIP file ({err}). "
            "Fix: upload a ZIP archive created with `zip -r` or `kubeclip dataset pack`."
        ) from err
    except OSError as err:
        raise DatasetError(f"cannot read dataset archive {zip_path}: {err}. Fix: check the file's permissions.") from err


def file_members(archive: zipfile.ZipFile) -> frozenset[str]:
    """Return the names of all file members, leaving out directory entries."""
    return frozenset(info.filename for info in archive.infolist() if not info.is_dir())


def find_jsonl_member(archive: zipfile.ZipFile) -> str:
    """Return the name of the one ``*.jsonl`` file at the archive root.

    Raises DatasetError when there is none or more than one. When JSONL files exist
    only inside folders, the message names them, because the usual cause is an
    archive made from the dataset's parent folder.
    """
    jsonl_members = sorted(name for name in file_members(archive) if name.lower().endswith(JSONL_SUFFIX))
    at_root = [name for name in jsonl_members if "/" not in name]
    if len(at_root) == 1:
        return at_root[0]
    if len(at_root) > 1:
        raise DatasetError(
            f"archive {archive.filename} has {len(at_root)} JSONL files at its root ({', '.join(at_root)}), "
            "but exactly one is allowed. Fix: merge them into one file or remove the extra ones."
        )
    raise DatasetError(_missing_jsonl_message(archive, jsonl_members))


def _missing_jsonl_message(archive: zipfile.ZipFile, nested_jsonl: list[str]) -> str:
    message = f"archive {archive.filename} has no .jsonl file at its root."
    if nested_jsonl:
        listed = ", ".join(nested_jsonl[:5])
        return (
            f"{message} JSONL files were found inside folders: {listed}. "
            "Fix: create the archive from inside the dataset folder, so the JSONL file is at the archive root."
        )
    return f"{message} Fix: add a JSONL file with one {{\"image\": ..., \"captions\": [...]}} object per line."


def read_jsonl_lines(archive: zipfile.ZipFile, member: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` for every line of a member, numbered from 1.

    Lines are split at ``\\n`` only and keep their line ending, so the caller sees
    the exact bytes (a BOM, ``\\r``, invalid UTF-8).
    """
    try:
        with archive.open(member) as stream:
            yield from enumerate(stream, start=1)
    except _MEMBER_READ_ERRORS as err:
        raise DatasetError(_unreadable_member_message(archive, member, err)) from err


def read_member(archive: zipfile.ZipFile, member: str) -> bytes:
    """Return the uncompressed bytes of one member, or raise DatasetError if it cannot be read.

    NOTE: the member is read whole, with no size limit. The image pixel limit
    applies only after this, so a highly compressed huge member still costs its
    full size in memory.
    """
    try:
        return archive.read(member)
    except _MEMBER_READ_ERRORS as err:
        raise DatasetError(_unreadable_member_message(archive, member, err)) from err


def _unreadable_member_message(archive: zipfile.ZipFile, member: str, err: BaseException) -> str:
    return (
        f"cannot read member {member} of archive {archive.filename}: {err}. "
        "Fix: recreate the archive without encryption, using the store or deflate method."
    )


@contextlib.contextmanager
def atomic_output(output_path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``output_path`` and move it there on success.

    The temporary file is removed when the block raises, so a failed write never
    leaves a partial file at ``output_path``.
    """
    output_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent)
    os.close(handle)
    temp_path = Path(temp_name)
    # mkstemp creates the file readable by its owner only, but the output gets ordinary file permissions.
    temp_path.chmod(_FILE_MODE)
    try:
        yield temp_path
        os.replace(temp_path, output_path)
    finally:
        temp_path.unlink(missing_ok=True)


def write_archive(output_path: Path, entries: Mapping[str, bytes | Path]) -> None:
    """Write a ZIP whose bytes depend only on ``entries``: member name to content or source file.

    Members are written in sorted name order with a fixed timestamp and mode.
    Already-compressed formats (JPEG, PNG, ...) are stored. Other members are
    deflated, which is reproducible for a given zlib version.
    """
    with zipfile.ZipFile(output_path, "w") as archive:
        for name in sorted(entries):
            _write_member(archive, name, entries[name])


def _write_member(archive: zipfile.ZipFile, name: str, content: bytes | Path) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE_TIME)
    info.create_system = _UNIX_CREATE_SYSTEM
    info.external_attr = _FILE_MODE << 16
    info.compress_type = zipfile.ZIP_STORED if name.lower().endswith(_COMPRESSED_SUFFIXES) else zipfile.ZIP_DEFLATED
    if isinstance(content, bytes):
        archive.writestr(info, content)
        return
    info.file_size = content.stat().st_size
    with content.open("rb") as source, archive.open(info, "w", force_zip64=info.file_size > zipfile.ZIP64_LIMIT) as target:
        shutil.copyfileobj(source, target)
