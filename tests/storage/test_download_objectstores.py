"""Tests of download_file against moto (S3) and fake-gcs-server (GCS), with a proxy that breaks connections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kubeclip.trainer.errors import CredentialsError, StorageError
from kubeclip.trainer.storage.download import download_file
from kubeclip.trainer.storage.objects import ChecksumMismatchError
from tests.storage.conftest import MEBIBYTE, ObjectStore, payload
from tests.support.breaking_proxy import BreakingProxy
from tests.support.objectstores import S3Server

pytestmark = pytest.mark.objectstore

SIZE = 6 * MEBIBYTE


def media_requests(proxy: BreakingProxy) -> list[dict[str, str]]:
    """Return the headers of the requests that fetched object bytes (not metadata) through the proxy."""
    found = []
    for request in proxy.requests():
        # fake-gcs-server serves object bytes at /download/...?alt=media and metadata
        # below /storage/v1/. Any other GET is an S3 GetObject, because downloads never list.
        is_gcs_media = "alt=media" in request.target
        is_gcs_metadata = "/storage/v1/" in request.target
        is_s3_get = request.method == "GET" and not is_gcs_metadata and not is_gcs_media
        if is_gcs_media or is_s3_get:
            found.append(request.headers)
    return found


def test_download_returns_exact_bytes(object_store: ObjectStore, tmp_path: Path) -> None:
    data = payload(SIZE)
    object_store.put(object_store.key("train.zip"), data)
    reports: list[tuple[int, int | None]] = []

    def record_progress(done: int, total: int | None) -> None:
        reports.append((done, total))

    path = download_file(object_store.uri("train.zip"), tmp_path / "train.zip", progress=record_progress)

    assert path == tmp_path / "train.zip"
    assert path.read_bytes() == data
    assert not (tmp_path / "train.zip.part").exists()
    assert reports[-1] == (SIZE, SIZE)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_download_skips_cached_copy(object_store: ObjectStore, make_proxy, tmp_path: Path) -> None:
    data = payload(MEBIBYTE)
    object_store.put(object_store.key("train.zip"), data)
    download_file(object_store.uri("train.zip"), tmp_path / "train.zip")
    proxy = make_proxy(object_store.port, broken_connections=0)
    object_store.use_endpoint(proxy.url)

    download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert proxy.requests(), "the second call should have asked the store for the object's metadata"
    assert media_requests(proxy) == []
    assert (tmp_path / "train.zip").read_bytes() == data


def test_download_resumes_after_broken_connection(
    object_store: ObjectStore, make_proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(SIZE, seed=1)
    object_store.put(object_store.key("train.zip"), data)
    proxy = make_proxy(object_store.port, cut_after=2 * MEBIBYTE, broken_connections=2)
    object_store.use_endpoint(proxy.url)

    with caplog.at_level(logging.WARNING, logger="kubeclip.trainer.storage.download"):
        path = download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == data
    assert proxy.cuts == 2
    ranges = [headers.get("range") for headers in media_requests(proxy)]
    assert ranges[0] is None
    assert all(value is not None and value.startswith("bytes=") for value in ranges[1:])
    assert len(ranges) >= 3
    retries = [record for record in caplog.records if record.getMessage() == "download attempt failed, retrying"]
    assert [record.attempt for record in retries] == [1, 2]


def test_download_resumes_part_from_earlier_process(object_store: ObjectStore, make_proxy, tmp_path: Path) -> None:
    data = payload(SIZE, seed=2)
    object_store.put(object_store.key("train.zip"), data)
    breaking = make_proxy(object_store.port, cut_after=3 * MEBIBYTE, broken_connections=1)
    object_store.use_endpoint(breaking.url)
    message = r"failed after 1 attempt .* then run again, which resumes the download from the train.zip.part file"
    with pytest.raises(StorageError, match=message):
        download_file(object_store.uri("train.zip"), tmp_path / "train.zip", max_attempts=1)
    kept = (tmp_path / "train.zip.part").stat().st_size
    assert 0 < kept < SIZE

    passing = make_proxy(object_store.port, broken_connections=0)
    object_store.use_endpoint(passing.url)
    path = download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == data
    assert [headers.get("range") for headers in media_requests(passing)] == [f"bytes={kept}-"]
    assert not (tmp_path / "train.zip.part.json").exists()


def test_download_restarts_when_object_changed(object_store: ObjectStore, make_proxy, tmp_path: Path) -> None:
    object_store.put(object_store.key("train.zip"), payload(SIZE, seed=3))
    breaking = make_proxy(object_store.port, cut_after=3 * MEBIBYTE, broken_connections=1)
    object_store.use_endpoint(breaking.url)
    with pytest.raises(StorageError):
        download_file(object_store.uri("train.zip"), tmp_path / "train.zip", max_attempts=1)
    assert (tmp_path / "train.zip.part").stat().st_size > 0
    changed = payload(SIZE, seed=4)
    object_store.put(object_store.key("train.zip"), changed)

    passing = make_proxy(object_store.port, broken_connections=0)
    object_store.use_endpoint(passing.url)
    path = download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == changed
    assert [headers.get("range") for headers in media_requests(passing)] == [None]


def test_download_replaces_cached_copy_of_old_version(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put(object_store.key("train.zip"), payload(MEBIBYTE, seed=5))
    download_file(object_store.uri("train.zip"), tmp_path / "train.zip")
    changed = payload(MEBIBYTE, seed=6)
    object_store.put(object_store.key("train.zip"), changed)

    path = download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == changed
    record = json.loads((tmp_path / "train.zip.json").read_text())
    assert record["size"] == MEBIBYTE
    assert record["source"] == object_store.uri("train.zip")


@pytest.mark.parametrize(
    "faults",
    [
        # The store's client library may check a whole-object response itself (botocore
        # checks S3's CRC32), so this case may fail before the module's own check.
        pytest.param({"corrupt_at": MEBIBYTE}, id="whole-response"),
        # A broken response is resumed with a range request, which only the module's
        # own MD5 or CRC32C check over the whole file can catch.
        pytest.param({"corrupt_at": MEBIBYTE, "cut_after": 2 * MEBIBYTE}, id="before-break"),
    ],
)
def test_download_rejects_checksum_mismatch(
    object_store: ObjectStore, make_proxy, tmp_path: Path, faults: dict[str, int]
) -> None:
    object_store.put(object_store.key("train.zip"), payload(SIZE, seed=7))
    proxy = make_proxy(object_store.port, broken_connections=1, **faults)
    object_store.use_endpoint(proxy.url)

    message = r"checksum .* so the partial file was deleted; run the job again, and if the mismatch persists, upload"
    with pytest.raises(ChecksumMismatchError, match=message) as raised:
        download_file(object_store.uri("train.zip"), tmp_path / "train.zip")

    assert object_store.uri("train.zip") in str(raised.value)
    assert proxy.corruptions == 1
    assert not (tmp_path / "train.zip").exists()
    assert not (tmp_path / "train.zip.part").exists()


def test_download_reports_missing_object(object_store: ObjectStore, tmp_path: Path) -> None:
    uri = object_store.uri("missing.zip")

    with pytest.raises(StorageError, match=rf"object {uri} was not found .* check the"):
        download_file(uri, tmp_path / "missing.zip")


def test_download_reports_missing_bucket(object_store: ObjectStore, tmp_path: Path) -> None:
    uri = f"{object_store.scheme}://no-such-bucket-kubeclip/train.zip"

    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-kubeclip' does not exist .* check the bucket name"):
        download_file(uri, tmp_path / "train.zip")


def test_s3_download_without_credentials_names_sources(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_server.apply_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    message = r"No S3 credentials were found to read s3://kubeclip-test/train.zip"
    with pytest.raises(CredentialsError, match=message) as raised:
        download_file(f"s3://{s3_server.bucket}/train.zip", tmp_path / "train.zip")

    message = str(raised.value)
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "AWS_PROFILE" in message
    assert "shared credentials file" in message


def test_s3_download_with_partial_credentials_is_rejected(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_server.apply_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    message = r"from env are incomplete \(missing: AWS_SECRET_ACCESS_KEY\); set both the access key ID and the secret"
    with pytest.raises(CredentialsError, match=message) as raised:
        download_file(f"s3://{s3_server.bucket}/train.zip", tmp_path / "train.zip")

    assert s3_server.access_key_id not in str(raised.value)


def test_s3_download_with_unknown_profile_is_rejected(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_server.apply_env(monkeypatch, tmp_path)

    message = r"AWS profile 'nightly' was not found .* add it there or choose another profile"
    with pytest.raises(CredentialsError, match=message):
        download_file(f"s3://{s3_server.bucket}/train.zip", tmp_path / "train.zip", profile="nightly")


def test_gcs_download_with_missing_credentials_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Without STORAGE_EMULATOR_HOST the client looks for real credentials. The named
    # file is checked before any other source, so no request leaves the machine.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))

    message = r"missing-key.json was not found.*GOOGLE_APPLICATION_CREDENTIALS.*application default credentials"
    with pytest.raises(CredentialsError, match=message):
        download_file("gs://kubeclip-test/train.zip", tmp_path / "train.zip")


def test_s3_download_with_rejected_credentials(
    s3_auth_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_auth_server.apply_env(monkeypatch, tmp_path)

    message = r"S3 rejected the request to read s3://kubeclip-test/train.zip \(403: Forbidden\); check that the credentials"
    with pytest.raises(CredentialsError, match=message) as raised:
        download_file(f"s3://{s3_auth_server.bucket}/train.zip", tmp_path / "train.zip")

    assert "AWS_ACCESS_KEY_ID" in str(raised.value)
    assert s3_auth_server.secret_access_key not in str(raised.value)
