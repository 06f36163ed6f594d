"""Write local files so that a reader never sees a partly written file at the final path.

Called by ``partial.py`` to finish a download, by ``local_store.py`` for writes to
``file://`` locations and by ``gcs_store.py`` for downloaded files. The writers put a
temporary file next to the target, fsync it, rename it over the target and fsync the
directory, so the rename survives a crash.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_file(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` after flushing both the file and the rename to disk."""
    fsync_file(source)
    os.replace(source, target)
    fsync_directory(target.parent)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        temporary.write_bytes(data)
        replace_file(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def copy_file_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        shutil.copyfile(source, temporary)
        replace_file(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def temporary_path(target: Path) -> Path:
    """Return an unused name for a temporary file next to ``target``."""
    # A unique name in the target's directory, so the rename stays on one file system
    # and two writers of the same target do not share a temporary file. Unlike
    # tempfile.mkstemp, which creates mode 0600, the file gets the umask's default mode.
    return target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
