"""Object and prefix operations on Google Cloud Storage, through one google-cloud-storage client.

Called by ``download.py`` (``stat`` and ``copy_range``, for resumable file downloads) and
by ``remote.py`` (the directory-like operations for checkpoints and the final model).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import google.api_core.exceptions
import google.auth.exceptions
import requests.exceptions
import urllib3.exceptions
from google.cloud import storage

from kubeclip.trainer.storage.atomic import replace_file, temporary_path
from kubeclip.trainer.storage.clients import gcs_storage_error, is_gcs_connection_error, missing_bucket_error
from kubeclip.trainer.storage.objects import ByteSink, Checksum, ObjectChanged, ObjectInfo, TransferInterrupted
from kubeclip.trainer.storage.uri import Location

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_GCS_ERRORS = (
    google.api_core.exceptions.GoogleAPIError,
    google.auth.exceptions.GoogleAuthError,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class GCSStore:
    """Reads and writes objects of ``gs://`` locations with one GCS client."""

    def __init__(self, client: storage.Client) -> None:
        self.client = client

    def stat(self, location: Location) -> ObjectInfo:
        with _translated_errors(location, "read"):
            blob = self._bucket(location).get_blob(location.key)
            if blob is None:
                raise self._not_found_error(location)
        checksum = Checksum("crc32c", base64.b64decode(blob.crc32c)) if blob.crc32c else None
        return ObjectInfo(size=blob.size, version=str(blob.generation), checksum=checksum)

    def copy_range(self, location: Location, info: ObjectInfo, start: int, sink: ByteSink) -> None:
        # The pinned generation makes GCS respond with 404 instead of returning bytes of
        # a newer object. A new blob object has no media link from the metadata, so it
        # downloads from the client's endpoint, which may be an emulator or a proxy.
        # raw_download keeps gzip-encoded objects as stored, so size and CRC32C match
        # the metadata. retry=None because download.py retries and resumes itself.
        generation = int(info.version) if info.version is not None else None
        blob = self._bucket(location).blob(location.key, generation=generation)
        try:
            blob.download_to_file(_SinkFile(sink), start=start or None, raw_download=True, checksum=None, retry=None)
        except _GCS_ERRORS as err:
            raise _classify_read_error(err, location) from err

    def upload_file(self, local_path: Path, location: Location) -> None:
        # google-cloud-storage (3.17 tested) sends files above 8 MiB as a resumable
        # upload, and checks CRC32C by default for both kinds of upload.
        with _translated_errors(location, "upload to"):
            self._bucket(location).blob(location.key).upload_from_filename(str(local_path))

    def fetch_file(self, location: Location, local_path: Path) -> None:
        # The library checks the CRC32C by default. A temporary file and a rename keep
        # a partly downloaded file from appearing at ``local_path``.
        temporary = temporary_path(local_path)
        try:
            with _translated_errors(location, "download"):
                self._bucket(location).blob(location.key).download_to_filename(str(temporary))
            replace_file(temporary, local_path)
        finally:
            temporary.unlink(missing_ok=True)

    def list_files(self, location: Location) -> list[str]:
        prefix = location.directory_prefix
        # Names ending in '/' are folder markers that consoles create, not files.
        return [name[len(prefix):] for name in self._list_names(location) if not name.endswith("/")]

    def list_children(self, location: Location) -> list[str]:
        prefix = location.directory_prefix
        with _translated_errors(location, "list"):
            iterator = self.client.list_blobs(location.bucket, prefix=prefix, delimiter="/")
            # The iterator fills ``prefixes`` only while its pages are read.
            for _ in iterator:
                pass
        return sorted(name[len(prefix):].rstrip("/") for name in iterator.prefixes)

    def exists(self, location: Location) -> bool:
        with _translated_errors(location, "read"):
            if location.key and self._bucket(location).blob(location.key).exists():
                return True
        with _translated_errors(location, "list"):
            blobs = list(self.client.list_blobs(location.bucket, prefix=location.directory_prefix, max_results=1))
        return bool(blobs)

    def read_bytes(self, location: Location) -> bytes:
        with _translated_errors(location, "read"):
            return self._bucket(location).blob(location.key).download_as_bytes()

    def write_bytes(self, location: Location, data: bytes) -> None:
        with _translated_errors(location, "write"):
            self._bucket(location).blob(location.key).upload_from_string(data)

    def delete_tree(self, location: Location) -> None:
        names = self._list_names(location)
        if location.key and location.key not in names:
            names.append(location.key)
        bucket = self._bucket(location)
        with _translated_errors(location, "delete"):
            for name in names:
                try:
                    bucket.blob(name).delete()
                except google.api_core.exceptions.NotFound:
                    # The key itself is often not an object but only a prefix.
                    continue

    def _list_names(self, location: Location) -> list[str]:
        with _translated_errors(location, "list"):
            return [blob.name for blob in self.client.list_blobs(location.bucket, prefix=location.directory_prefix)]

    def _bucket(self, location: Location) -> storage.Bucket:
        return self.client.bucket(location.bucket)

    def _not_found_error(self, location: Location) -> Exception:
        if not self._bucket(location).exists():
            return missing_bucket_error(location, "GCS")
        return gcs_storage_error(google.api_core.exceptions.NotFound("object not found"), location, "download")


class _SinkFile:
    """The write-only file object that ``Blob.download_to_file`` expects, passing chunks to a sink."""

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink(bytes(data))
        return len(data)


@contextmanager
def _translated_errors(location: Location, action: str) -> Iterator[None]:
    """Re-raise google-cloud-storage and transport exceptions as StorageError or CredentialsError."""
    try:
        yield
    except google.api_core.exceptions.NotFound as err:
        # Listing returns 404 only when the bucket is missing, never for an empty prefix.
        if action == "list":
            raise missing_bucket_error(location, "GCS") from err
        raise gcs_storage_error(err, location, action) from err
    except _GCS_ERRORS as err:
        raise gcs_storage_error(err, location, action) from err


def _classify_read_error(err: Exception, location: Location) -> Exception:
    if isinstance(err, google.api_core.exceptions.NotFound):
        # The pinned generation is gone, so the object was replaced or deleted.
        return ObjectChanged(f"{location} changed since the download started")
    if isinstance(err, google.api_core.exceptions.GoogleAPICallError) and err.code in _RETRYABLE_STATUSES:
        return TransferInterrupted(f"GCS replied HTTP {err.code}")
    if is_gcs_connection_error(err) or isinstance(err, (urllib3.exceptions.HTTPError, TimeoutError)):
        return TransferInterrupted(f"{type(err).__name__}: {err}")
    return gcs_storage_error(err, location, "download")
