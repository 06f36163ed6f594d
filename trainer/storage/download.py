"""Download one file (the dataset ZIP) from a local path, S3, GCS or HTTP(S), resuming after breaks.

Called by the trainer before it opens the dataset. The bytes go to ``destination.part``
and are renamed to ``destination`` only after the size and, where the store reports
one, the checksum were verified, so a file at ``destination`` is always complete. The
files next to the destination are described in ``partial.py``.
"""

from __future__ import annotations

import fcntl
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeclip.trainer.errors import ConfigError, MissingLocationError, StorageError
from kubeclip.trainer.storage.clients import make_gcs_client, make_s3_client
from kubeclip.trainer.storage.gcs_store import GCSStore
from kubeclip.trainer.storage.http_reader import HTTPReader
from kubeclip.trainer.storage.objects import (
    ByteSink,
    ChecksumMismatchError,
    ObjectChanged,
    ObjectInfo,
    ObjectReader,
    TransferInterrupted,
)
from kubeclip.trainer.storage.partial import (
    DownloadPaths,
    PartWriter,
    discard_part,
    finish_part,
    is_cached,
    prepare_part,
)
from kubeclip.trainer.storage.s3_store import S3Store
from kubeclip.trainer.storage.uri import Location, parse_location

logger = logging.getLogger(__name__)

#: Delay before the first retry. It doubles with each further retry up to the maximum,
#: and the actual delay is a random 50 to 100 % of it, so many pods do not retry in step.
RETRY_BASE_DELAY_SECONDS = 1.0
RETRY_MAX_DELAY_SECONDS = 30.0

ProgressCallback = Callable[[int, int | None], None]


def download_file(
    location: str,
    destination: Path,
    *,
    region: str | None = None,
    profile: str | None = None,
    progress: ProgressCallback | None = None,
    max_attempts: int = 5,
) -> Path:
    """Download the file at ``location`` to ``destination`` and return the path of the local file.

    A local path or ``file://`` location is returned as it is, without a copy. A remote
    object is skipped when ``destination`` already contains the same version. A broken
    transfer is retried up to ``max_attempts`` times in total, resuming with a range
    request while the object is unchanged. ``region`` and ``profile`` apply to S3 only.
    ``progress(bytes_done, total_bytes)`` is called after each chunk; ``total_bytes``
    is None when the server does not send the size.

    Raises ConfigError for a malformed location, CredentialsError when the store rejects
    or lacks credentials, and StorageError for every other failure.
    """
    parsed = parse_location(location, require_key=True)
    if parsed.is_local:
        return _existing_local_file(parsed)
    if max_attempts < 1:
        raise ConfigError(f"max_attempts is {max_attempts}, but a download needs at least 1 attempt; pass 1 or more.")

    paths = DownloadPaths(Path(destination))
    reader = _make_reader(parsed, region=region, profile=profile)
    try:
        paths.destination.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(paths):
            return _Download(reader, parsed, paths, progress, max_attempts).run()
    except OSError as err:
        # The readers turn network errors into their own exceptions, so an OSError
        # here comes from the local file system.
        raise StorageError(
            f"Writing the download of {parsed} to {paths.destination} failed ({err.strerror}: {err.filename}); "
            f"check that the directory is writable and that the disk has free space."
        ) from err


def retry_delay(attempt: int) -> float:
    """Return the seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
    ceiling = min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_DELAY_SECONDS * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


class _Download:
    """The attempt loop of one download_file call for a remote object, with its state."""

    def __init__(
        self,
        reader: ObjectReader,
        location: Location,
        paths: DownloadPaths,
        progress: ProgressCallback | None,
        max_attempts: int,
    ) -> None:
        self.reader = reader
        self.location = location
        self.source = str(location)
        self.paths = paths
        self.progress = progress
        self.max_attempts = max_attempts
        self.info: ObjectInfo | None = None

    def run(self) -> Path:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt()
            except TransferInterrupted as err:
                self._prepare_retry(attempt, err)
            except ObjectChanged as err:
                # Start over with fresh metadata. The bytes are discarded even when the
                # version looks unchanged, because a server that ignores Range requests
                # also raises ObjectChanged, and resuming would fail the same way again.
                self.info = None
                discard_part(self.paths)
                self._prepare_retry(attempt, err)
            except ChecksumMismatchError:
                discard_part(self.paths)
                raise
        raise AssertionError("unreachable: the last failed attempt raises")

    def _attempt(self) -> Path:
        if self.info is None:
            self.info = self.reader.stat(self.location)
            if is_cached(self.paths, self.source, self.info):
                logger.info("download skipped, cached copy is current", extra=self._log_fields())
                return self.paths.destination

        info = self.info
        offset = prepare_part(self.paths, self.source, info)
        writer = PartWriter(self.paths.part, offset, info.checksum)
        try:
            if info.size is None or offset < info.size:
                logger.info("download started", extra={**self._log_fields(), "offset": offset, "size": info.size})
                self.reader.copy_range(self.location, info, offset, self._sink(writer, info))
        finally:
            writer.close()

        _check_size(writer.size, info, self.location)
        finish_part(self.paths, self.source, info, writer)
        logger.info("download finished", extra={**self._log_fields(), "size": writer.size})
        return self.paths.destination

    def _sink(self, writer: PartWriter, info: ObjectInfo) -> ByteSink:
        def write(chunk: bytes) -> None:
            writer.write(chunk)
            if self.progress is not None:
                self.progress(writer.size, info.size)

        return write

    def _prepare_retry(self, attempt: int, error: Exception) -> None:
        if attempt >= self.max_attempts:
            attempts = "1 attempt" if attempt == 1 else f"{attempt} attempts"
            raise StorageError(
                f"Downloading {self.location} failed after {attempts} ({error}); check the network and "
                f"the store, then run again, which resumes the download from the {self.paths.part.name} file."
            ) from error
        delay = retry_delay(attempt)
        fields = {
            **self._log_fields(),
            "attempt": attempt,
            "max_attempts": self.max_attempts,
            "delay_s": round(delay, 2),
            "reason": str(error),
        }
        logger.warning("download attempt failed, retrying", extra=fields)
        time.sleep(delay)

    def _log_fields(self) -> dict[str, object]:
        return {"uri": self.source, "path": str(self.paths.destination)}


def _check_size(size: int, info: ObjectInfo, location: Location) -> None:
    if info.size is None or size == info.size:
        return
    if size < info.size:
        raise TransferInterrupted(f"the response ended after {size} of {info.size} bytes")
    raise ObjectChanged(f"{location} sent {size} bytes, more than its size of {info.size}")


def _existing_local_file(location: Location) -> Path:
    path = Path(location.key)
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise MissingLocationError(f"The file {path} {state}; check the path, or give an s3://, gs:// or https:// URL.")
    return path


def _make_reader(location: Location, *, region: str | None, profile: str | None) -> ObjectReader:
    if location.scheme == "s3":
        return S3Store(make_s3_client(region=region, profile=profile))
    if location.scheme == "gs":
        return GCSStore(make_gcs_client())
    return HTTPReader()


@contextmanager
def _exclusive_lock(paths: DownloadPaths) -> Iterator[None]:
    """Hold an exclusive lock on ``destination.lock`` while the body runs.

    Processes that share a destination, such as one per GPU on a node, then download
    it once, and the others find the cached copy.
    """
    with open(paths.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another download to the same path", extra={"path": str(paths.destination)})
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
