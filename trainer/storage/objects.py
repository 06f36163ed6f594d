"""Types shared by the download loop and the per-store readers: object metadata, checksums, signals.

``download.py`` drives a reader (``S3Store``, ``GCSStore`` or ``HTTPReader``) through the
``ObjectReader`` protocol. A reader raises ``TransferInterrupted`` when a retry can resume
the transfer and ``ObjectChanged`` when the object is no longer the one it described.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import google_crc32c

from kubeclip.trainer.errors import StorageError

if TYPE_CHECKING:
    from kubeclip.trainer.storage.uri import Location

#: Bytes read per chunk from S3 and HTTP response bodies. The GCS library picks its own size.
CHUNK_SIZE = 1024 * 1024

ByteSink = Callable[[bytes], None]


class Hasher(Protocol):
    def update(self, data: bytes) -> object: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class Checksum:
    """A whole-object checksum that the store reports: ``md5`` or ``crc32c``, as raw digest bytes."""

    algorithm: str
    digest: bytes

    def new_hasher(self) -> Hasher:
        if self.algorithm == "md5":
            return hashlib.md5(usedforsecurity=False)
        if self.algorithm == "crc32c":
            return google_crc32c.Checksum()
        raise ValueError(f"Unsupported checksum algorithm {self.algorithm!r}; expected 'md5' or 'crc32c'.")


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of a remote object.

    ``version`` identifies the object's content: the S3 ETag, the GCS generation, or the
    HTTP ETag or Last-Modified value. None means the store gave none, so a partial
    download cannot be proven current and is never resumed or reused.
    """

    size: int | None
    version: str | None
    checksum: Checksum | None = None


class TransferInterrupted(Exception):
    """The connection broke or timed out, or the store responded with a retryable error, so a retry can resume."""


class ObjectChanged(Exception):
    """The remote object changed since it was described, so the bytes already written are stale."""


class ChecksumMismatchError(StorageError):
    """The downloaded bytes do not match the checksum that the store reports for the object."""


class ObjectReader(Protocol):
    """Reads one remote object in ranges. The S3, GCS and HTTP readers implement it."""

    def stat(self, location: Location) -> ObjectInfo:
        """Return the object's metadata, or raise StorageError when it does not exist."""
        ...

    def copy_range(self, location: Location, info: ObjectInfo, start: int, sink: ByteSink) -> None:
        """Pass the object's bytes from offset ``start`` to its end to ``sink``, in chunks.

        Raises ObjectChanged when the object no longer matches ``info.version``.
        """
        ...
