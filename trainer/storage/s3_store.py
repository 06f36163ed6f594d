"""Object and prefix operations on S3 and S3-compatible stores, through one boto3 client.

Called by ``download.py`` (``stat`` and ``copy_range``, for resumable file downloads) and
by ``remote.py`` (the directory-like operations for checkpoints and the final model).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3.exceptions
import botocore.exceptions

from kubeclip.trainer.errors import StorageError
from kubeclip.trainer.storage.clients import (
    is_s3_connection_error,
    is_s3_not_found,
    missing_bucket_error,
    s3_error_code,
    s3_status,
    s3_storage_error,
)
from kubeclip.trainer.storage.objects import (
    CHUNK_SIZE,
    ByteSink,
    Checksum,
    ChecksumMismatchError,
    ObjectChanged,
    ObjectInfo,
    TransferInterrupted,
)
from kubeclip.trainer.storage.uri import Location

# DeleteObjects accepts at most 1000 keys per request.
_DELETE_BATCH_SIZE = 1000
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PLAIN_MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')
_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)


class S3Store:
    """Reads and writes objects of S3 locations with one boto3 S3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def stat(self, location: Location) -> ObjectInfo:
        with _translated_errors(location, "read"):
            try:
                head = self.client.head_object(Bucket=location.bucket, Key=location.key)
            except botocore.exceptions.ClientError as err:
                if is_s3_not_found(err) and not self._bucket_exists(location):
                    raise missing_bucket_error(location, "S3") from err
                raise
        return ObjectInfo(size=int(head["ContentLength"]), version=head["ETag"], checksum=_md5_checksum(head))

    def copy_range(self, location: Location, info: ObjectInfo, start: int, sink: ByteSink) -> None:
        request: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
        if info.version is not None:
            # S3 responds with 412 Precondition Failed instead of returning bytes of a newer object.
            request["IfMatch"] = info.version
        if start > 0:
            request["Range"] = f"bytes={start}-"
        try:
            response = self.client.get_object(**request)
            for chunk in response["Body"].iter_chunks(CHUNK_SIZE):
                sink(chunk)
        except _BOTO_ERRORS as err:
            raise _classify_read_error(err, location) from err

    def upload_file(self, local_path: Path, location: Location) -> None:
        # upload_file switches to parallel multipart uploads for large files.
        with _translated_errors(location, "upload to"):
            self.client.upload_file(str(local_path), location.bucket, location.key)

    def fetch_file(self, location: Location, local_path: Path) -> None:
        # download_file writes to a temporary name and renames it when complete.
        with _translated_errors(location, "download"):
            self.client.download_file(location.bucket, location.key, str(local_path))

    def list_files(self, location: Location) -> list[str]:
        prefix = location.directory_prefix
        # Keys ending in '/' are folder markers that consoles create, not files.
        return [key[len(prefix):] for key in self._list_keys(location) if not key.endswith("/")]

    def list_children(self, location: Location) -> list[str]:
        prefix = location.directory_prefix
        names = [item["Prefix"][len(prefix):].rstrip("/") for item in self._list(location, prefix, delimiter="/")]
        return sorted(names)

    def exists(self, location: Location) -> bool:
        if location.key and self._object_exists(location):
            return True
        with _translated_errors(location, "list"):
            page = self.client.list_objects_v2(Bucket=location.bucket, Prefix=location.directory_prefix, MaxKeys=1)
        return int(page.get("KeyCount", 0)) > 0

    def read_bytes(self, location: Location) -> bytes:
        with _translated_errors(location, "read"):
            response = self.client.get_object(Bucket=location.bucket, Key=location.key)
            return response["Body"].read()

    def write_bytes(self, location: Location, data: bytes) -> None:
        with _translated_errors(location, "write"):
            self.client.put_object(Bucket=location.bucket, Key=location.key, Body=data)

    def delete_tree(self, location: Location) -> None:
        keys = self._list_keys(location)
        if location.key and location.key not in keys and self._object_exists(location):
            keys.append(location.key)
        for start in range(0, len(keys), _DELETE_BATCH_SIZE):
            self._delete_batch(location, keys[start:start + _DELETE_BATCH_SIZE])

    def _list_keys(self, location: Location) -> list[str]:
        return [item["Key"] for item in self._list(location, location.directory_prefix, delimiter=None)]

    def _list(self, location: Location, prefix: str, *, delimiter: str | None) -> Iterator[dict[str, Any]]:
        arguments = {"Bucket": location.bucket, "Prefix": prefix}
        if delimiter is not None:
            arguments["Delimiter"] = delimiter
        field = "Contents" if delimiter is None else "CommonPrefixes"
        with _translated_errors(location, "list"):
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                yield from page.get(field, [])

    def _object_exists(self, location: Location) -> bool:
        with _translated_errors(location, "read"):
            try:
                self.client.head_object(Bucket=location.bucket, Key=location.key)
            except botocore.exceptions.ClientError as err:
                if not is_s3_not_found(err):
                    raise
                if not self._bucket_exists(location):
                    raise missing_bucket_error(location, "S3") from err
                return False
        return True

    def _bucket_exists(self, location: Location) -> bool:
        """Return False only when S3 reports that the bucket does not exist.

        Credentials allowed to read objects but not to head the bucket count as "exists",
        so the caller reports the missing object and not a misleading access error.
        """
        try:
            self.client.head_bucket(Bucket=location.bucket)
        except botocore.exceptions.ClientError as err:
            return not (is_s3_not_found(err) or s3_error_code(err) == "NoSuchBucket")
        return True

    def _delete_batch(self, location: Location, keys: list[str]) -> None:
        with _translated_errors(location, "delete"):
            response = self.client.delete_objects(
                Bucket=location.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )
        failures = response.get("Errors", [])
        if failures:
            first = failures[0]
            raise StorageError(
                f"S3 failed to delete {len(failures)} objects under {location}, for example "
                f"{first.get('Key')!r} ({first.get('Code')}: {first.get('Message')}); check the credentials' "
                f"delete permission and retry."
            )


@contextmanager
def _translated_errors(location: Location, action: str) -> Iterator[None]:
    """Re-raise boto3 and botocore exceptions as StorageError or CredentialsError."""
    try:
        yield
    except boto3.exceptions.S3UploadFailedError as err:
        # boto3's managed upload wraps the ClientError that caused the failure.
        cause = err.__cause__ or err.__context__
        raise s3_storage_error(cause if isinstance(cause, Exception) else err, location, action) from err
    except _BOTO_ERRORS as err:
        raise s3_storage_error(err, location, action) from err


def _classify_read_error(err: Exception, location: Location) -> Exception:
    if isinstance(err, botocore.exceptions.ClientError):
        if s3_status(err) == 412 or s3_error_code(err) == "PreconditionFailed":
            return ObjectChanged(f"{location} changed since the download started")
        if s3_status(err) in _RETRYABLE_STATUSES:
            return TransferInterrupted(f"S3 replied HTTP {s3_status(err)} ({s3_error_code(err)})")
    if is_s3_connection_error(err):
        return TransferInterrupted(f"{type(err).__name__}: {err}")
    if isinstance(err, botocore.exceptions.FlexibleChecksumError):
        # botocore (1.44 tested) compares a response that covers the whole object
        # with the CRC32 that S3 stored at upload; ranged responses are not checked.
        return ChecksumMismatchError(
            f"The bytes downloaded from {location} do not match the checksum that S3 stores for the object "
            f"({err}), so the partial file was deleted; run the job again, and if the mismatch persists, "
            f"upload the object again."
        )
    return s3_storage_error(err, location, "download")


def _md5_checksum(head: dict[str, Any]) -> Checksum | None:
    """Return the object's MD5 if its ETag is one.

    The ETag of a multipart upload contains a '-', and that of an SSE-KMS or SSE-C
    encrypted object is not an MD5 of the content, so neither is used.
    """
    # NOTE: Some S3-compatible stores (for example MinIO with automatic encryption)
    # may return 32-hex ETags that are not MD5s while reporting AES256 encryption.
    # A download from such a store fails the checksum check.
    match = _PLAIN_MD5_ETAG.fullmatch(str(head.get("ETag", "")))
    encryption = str(head.get("ServerSideEncryption", ""))
    if match is None or encryption.startswith("aws:kms") or head.get("SSECustomerAlgorithm"):
        return None
    return Checksum("md5", bytes.fromhex(match.group(1)))
