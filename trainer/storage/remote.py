"""Directory-like operations on an output location (local path, ``file://``, ``s3://``, ``gs://``).

Meant for the trainer's checkpoint and model-export code, which uploads checkpoint
directories, lists ``checkpoint-N`` prefixes to find the newest one, downloads one to
resume from, and deletes old ones. A location names a directory (a key prefix on object
stores) or, for ``upload_file``, ``read_bytes`` and ``write_bytes``, a single file.
``region`` and ``profile`` apply to S3 only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from kubeclip.trainer.errors import ConfigError, StorageError
from kubeclip.trainer.storage.clients import make_gcs_client, make_s3_client
from kubeclip.trainer.storage.gcs_store import GCSStore
from kubeclip.trainer.storage.local_store import LocalStore
from kubeclip.trainer.storage.s3_store import S3Store
from kubeclip.trainer.storage.uri import Location, parse_location

logger = logging.getLogger(__name__)


class DirectoryStore(Protocol):
    """The operations that each store (local, S3, GCS) implements for this module."""

    def upload_file(self, local_path: Path, location: Location) -> None: ...

    def fetch_file(self, location: Location, local_path: Path) -> None: ...

    def list_files(self, location: Location) -> list[str]: ...

    def list_children(self, location: Location) -> list[str]: ...

    def exists(self, location: Location) -> bool: ...

    def read_bytes(self, location: Location) -> bytes: ...

    def write_bytes(self, location: Location, data: bytes) -> None: ...

    def delete_tree(self, location: Location) -> None: ...


def upload_file(local_path: Path, location: str, *, region: str | None = None, profile: str | None = None) -> None:
    """Upload one local file to the file location ``location``."""
    parsed, store = _open(location, region, profile, require_key=True)
    _require_local_file(Path(local_path))
    store.upload_file(Path(local_path), parsed)


def upload_directory(
    local_dir: Path, location: str, *, region: str | None = None, profile: str | None = None
) -> list[str]:
    """Upload every file below ``local_dir`` to the same relative name below ``location``.

    Files go up in sorted order. Return the relative names uploaded. A caller that needs
    a file to arrive last (a marker that the checkpoint is complete) uploads it
    afterwards with ``upload_file``.
    """
    parsed, store = _open(location, region, profile)
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"Cannot upload {root} to {parsed}: it is not a directory; check the path.")
    names = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    for name in names:
        store.upload_file(root / name, parsed.child(name))
    logger.info("directory uploaded", extra={"uri": str(parsed), "path": str(root), "files": len(names)})
    return names


def download_directory(
    location: str, local_dir: Path, *, region: str | None = None, profile: str | None = None
) -> list[str]:
    """Download every file below ``location`` into ``local_dir`` and return the relative names.

    Raises StorageError when nothing exists below ``location``.
    """
    parsed, store = _open(location, region, profile)
    root = Path(local_dir)
    names = store.list_files(parsed)
    if not names:
        raise StorageError(f"No files were found below {parsed}; check the location, or write the files there first.")
    for name in names:
        target = _local_target(root, name, parsed)
        target.parent.mkdir(parents=True, exist_ok=True)
        store.fetch_file(parsed.child(name), target)
    logger.info("directory downloaded", extra={"uri": str(parsed), "path": str(root), "files": len(names)})
    return names


def list_children(location: str, *, region: str | None = None, profile: str | None = None) -> list[str]:
    """Return the sorted names of the immediate subdirectories (common prefixes) below ``location``."""
    parsed, store = _open(location, region, profile)
    return store.list_children(parsed)


def exists(location: str, *, region: str | None = None, profile: str | None = None) -> bool:
    """Return True if ``location`` is a file or object, or a directory or prefix that contains one.

    A missing bucket raises StorageError, because it is a configuration mistake and
    not an empty output location.
    """
    parsed, store = _open(location, region, profile)
    return store.exists(parsed)


def read_bytes(location: str, *, region: str | None = None, profile: str | None = None) -> bytes:
    parsed, store = _open(location, region, profile, require_key=True)
    return store.read_bytes(parsed)


def write_bytes(location: str, data: bytes, *, region: str | None = None, profile: str | None = None) -> None:
    """Write ``data`` as the file or object ``location``, replacing it whole if it exists."""
    parsed, store = _open(location, region, profile, require_key=True)
    store.write_bytes(parsed, data)


def delete_tree(location: str, *, region: str | None = None, profile: str | None = None) -> None:
    """Delete the file or object at ``location`` and everything below it. A missing location is not an error.

    Raises ConfigError for a bucket root or the file system root, which would delete
    far more than one output.
    """
    parsed, store = _open(location, region, profile)
    if parsed.bucket is not None and not parsed.key.strip("/"):
        raise ConfigError(
            f"Deleting the whole bucket {parsed} is not allowed; name a prefix inside it, such as {parsed.child('run-1')}."
        )
    store.delete_tree(parsed)
    logger.info("location deleted", extra={"uri": str(parsed)})


def _open(
    location: str, region: str | None, profile: str | None, *, require_key: bool = False
) -> tuple[Location, DirectoryStore]:
    parsed = parse_location(location, require_key=require_key)
    if parsed.is_http:
        raise ConfigError(
            f"The location {parsed} is an HTTP URL, which can only be downloaded from; use a local path, "
            f"s3:// or gs:// location for outputs and checkpoints."
        )
    return parsed, _make_store(parsed, region, profile)


def _make_store(location: Location, region: str | None, profile: str | None) -> DirectoryStore:
    if location.scheme == "s3":
        return S3Store(make_s3_client(region=region, profile=profile))
    if location.scheme == "gs":
        return GCSStore(make_gcs_client())
    return LocalStore()


def _require_local_file(path: Path) -> None:
    if not path.is_file():
        raise StorageError(f"Cannot upload {path}: it is not a file; check the path.")


def _local_target(root: Path, name: str, location: Location) -> Path:
    """Return ``root / name``, rejecting object names that would land outside ``root``.

    An object store accepts keys such as ``a/../../etc/x``, so a key must not decide
    where outside the download directory a file is written.
    """
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()) or ".." in name.split("/"):
        raise StorageError(
            f"The object {name!r} below {location} would be written outside {root}; rename or delete that object."
        )
    return target
