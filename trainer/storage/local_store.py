"""The directory-like operations of ``remote.py`` for local paths and ``file://`` locations.

Called by ``remote.py``, so an output location on a local disk or a mounted volume
behaves like a bucket prefix. Writes replace files atomically (see ``atomic.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeclip.trainer.errors import ConfigError, StorageError
from kubeclip.trainer.storage.atomic import copy_file_atomically, write_bytes_atomically
from kubeclip.trainer.storage.uri import Location


class LocalStore:
    """Reads and writes files of ``file`` locations on the local file system."""

    def upload_file(self, local_path: Path, location: Location) -> None:
        with _translated_errors(location, "write"):
            copy_file_atomically(local_path, Path(location.key))

    def fetch_file(self, location: Location, local_path: Path) -> None:
        with _translated_errors(location, "read"):
            copy_file_atomically(Path(location.key), local_path)

    def list_files(self, location: Location) -> list[str]:
        root = Path(location.key)
        if not root.is_dir():
            return []
        with _translated_errors(location, "list"):
            return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())

    def list_children(self, location: Location) -> list[str]:
        root = Path(location.key)
        if not root.is_dir():
            return []
        with _translated_errors(location, "list"):
            return sorted(path.name for path in root.iterdir() if path.is_dir())

    def exists(self, location: Location) -> bool:
        return Path(location.key).exists()

    def read_bytes(self, location: Location) -> bytes:
        with _translated_errors(location, "read"):
            return Path(location.key).read_bytes()

    def write_bytes(self, location: Location, data: bytes) -> None:
        with _translated_errors(location, "write"):
            write_bytes_atomically(Path(location.key), data)

    def delete_tree(self, location: Location) -> None:
        path = Path(location.key)
        if path.resolve() == Path(path.resolve().anchor):
            raise ConfigError(f"Deleting the file system root {location} is not allowed; name a directory below it.")
        with _translated_errors(location, "delete"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


@contextmanager
def _translated_errors(location: Location, action: str) -> Iterator[None]:
    """Re-raise OSError as StorageError naming the path and the failed action."""
    try:
        yield
    except FileNotFoundError as err:
        raise StorageError(f"Failed to {action} {location}: {err.filename} does not exist; check the path.") from err
    except OSError as err:
        raise StorageError(
            f"Failed to {action} {location} ({err.strerror}: {err.filename}); check that the path exists "
            f"and is writable, and that the disk has free space."
        ) from err
