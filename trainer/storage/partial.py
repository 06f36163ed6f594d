"""Files next to a download's destination: the ``.part`` file, its record, and the cache record.

Called by ``download.py``. ``destination.part`` receives the bytes;
``destination.part.json`` records which object version they belong to, so a later
attempt or process resumes only when the object is unchanged. After verification
the ``.part`` file is renamed to ``destination`` and ``destination.json`` records the
version, so the next call can skip the download.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeclip.trainer.storage.atomic import replace_file, write_bytes_atomically
from kubeclip.trainer.storage.objects import Checksum, ChecksumMismatchError, Hasher, ObjectInfo

logger = logging.getLogger(__name__)

_HASH_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class DownloadPaths:
    """The destination of a download and the files kept next to it."""

    destination: Path

    @property
    def part(self) -> Path:
        return self._sibling(".part")

    @property
    def part_record(self) -> Path:
        return self._sibling(".part.json")

    @property
    def cache_record(self) -> Path:
        return self._sibling(".json")

    @property
    def lock(self) -> Path:
        return self._sibling(".lock")

    def _sibling(self, suffix: str) -> Path:
        return self.destination.with_name(self.destination.name + suffix)


def is_cached(paths: DownloadPaths, source: str, info: ObjectInfo) -> bool:
    """Return True if ``destination`` contains this version of the object, as its cache record states."""
    if info.version is None or info.size is None or not paths.destination.is_file():
        return False
    if paths.destination.stat().st_size != info.size:
        return False
    return _read_record(paths.cache_record) == _make_record(source, info)


def prepare_part(paths: DownloadPaths, source: str, info: ObjectInfo) -> int:
    """Return how many bytes of an existing ``.part`` file can be kept, and delete it if none can.

    Bytes are kept only when the ``.part`` record names the same source, size and
    version, because otherwise they may belong to an older version of the object.
    """
    record = _make_record(source, info)
    kept = paths.part.stat().st_size if paths.part.is_file() else 0
    resumable = info.version is not None and info.size is not None and kept <= info.size
    if kept and not (resumable and _read_record(paths.part_record) == record):
        logger.info("partial download discarded", extra={"uri": source, "path": str(paths.part), "bytes": kept})
        paths.part.unlink()
        kept = 0
    write_bytes_atomically(paths.part_record, json.dumps(record).encode())
    return kept


def discard_part(paths: DownloadPaths) -> None:
    paths.part.unlink(missing_ok=True)
    paths.part_record.unlink(missing_ok=True)


def finish_part(paths: DownloadPaths, source: str, info: ObjectInfo, writer: PartWriter) -> None:
    """Verify the checksum, rename ``.part`` to the destination and write the cache record.

    Raises ChecksumMismatchError, after deleting the ``.part`` file, when the digest differs.
    """
    if info.checksum is not None and writer.digest() != info.checksum.digest:
        discard_part(paths)
        raise ChecksumMismatchError(
            f"The {info.checksum.algorithm} checksum of the {writer.size} bytes downloaded from {source} does not "
            f"match the one the store reports, so the partial file was deleted; run the job again, and if the "
            f"mismatch persists, upload the object again."
        )
    # Delete the old record first, so a crash before the new one is written leaves a
    # destination without a record, which the next call downloads again.
    paths.cache_record.unlink(missing_ok=True)
    replace_file(paths.part, paths.destination)
    write_bytes_atomically(paths.cache_record, json.dumps(_make_record(source, info)).encode())
    paths.part_record.unlink(missing_ok=True)


class PartWriter:
    """Appends chunks to the ``.part`` file from a given offset and hashes the whole file's content."""

    def __init__(self, part: Path, offset: int, checksum: Checksum | None) -> None:
        self.size = offset
        self._hasher: Hasher | None = checksum.new_hasher() if checksum is not None else None
        with open(part, "ab") as handle:
            handle.truncate(offset)
        if self._hasher is not None and offset:
            _hash_prefix(part, offset, self._hasher)
        self._handle = open(part, "ab")

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self.size += len(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)

    def digest(self) -> bytes | None:
        return self._hasher.digest() if self._hasher is not None else None

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def _hash_prefix(part: Path, length: int, hasher: Hasher) -> None:
    # The hash state of an earlier attempt is lost, so the kept bytes are read again.
    with open(part, "rb") as handle:
        remaining = length
        while remaining:
            block = handle.read(min(_HASH_READ_SIZE, remaining))
            if not block:
                raise OSError(f"{part} is shorter than {length} bytes")
            hasher.update(block)
            remaining -= len(block)


def _make_record(source: str, info: ObjectInfo) -> dict[str, Any]:
    return {"source": source, "size": info.size, "version": info.version}


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
