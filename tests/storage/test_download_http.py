"""Tests of download_file for HTTP URLs (a Range-capable server on 127.0.0.1) and local paths."""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import pytest

from kubeclip.trainer.errors import ConfigError, StorageError
from kubeclip.trainer.storage.download import download_file
from tests.storage.conftest import MEBIBYTE, payload
from tests.support.range_http_server import RangeHTTPServer, etag_of

SIZE = 4 * MEBIBYTE


def proxied_url(proxy, path: str) -> str:
    return f"{proxy.url}{path}"


def test_http_download_returns_exact_bytes(http_server: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(SIZE)
    http_server.put("/train.zip", data)
    reports: list[tuple[int, int | None]] = []

    def record_progress(done: int, total: int | None) -> None:
        reports.append((done, total))

    path = download_file(http_server.url("/train.zip"), tmp_path / "train.zip", progress=record_progress)

    assert path.read_bytes() == data
    assert reports[-1] == (SIZE, SIZE)
    assert [request.method for request in http_server.served] == ["HEAD", "GET"]


def test_http_download_skips_cached_copy(http_server: RangeHTTPServer, tmp_path: Path) -> None:
    http_server.put("/train.zip", payload(MEBIBYTE))
    download_file(http_server.url("/train.zip"), tmp_path / "train.zip")
    http_server.served.clear()

    download_file(http_server.url("/train.zip"), tmp_path / "train.zip")

    assert [request.method for request in http_server.served] == ["HEAD"]


def test_http_download_resumes_after_broken_connection(
    http_server: RangeHTTPServer, make_proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(SIZE, seed=1)
    http_server.put("/train.zip", data)
    proxy = make_proxy(http_server.port, cut_after=MEBIBYTE, broken_connections=2)

    with caplog.at_level(logging.WARNING, logger="kubeclip.trainer.storage.download"):
        path = download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == data
    assert proxy.cuts == 2
    gets = [request for request in http_server.served if request.method == "GET"]
    assert gets[0].range is None
    assert all(request.range is not None and request.range != "bytes=0-" for request in gets[1:])
    assert {request.if_range for request in gets[1:]} == {etag_of(data)}
    retries = [record for record in caplog.records if record.getMessage() == "download attempt failed, retrying"]
    assert [record.attempt for record in retries] == [1, 2]


def test_http_download_resumes_part_from_earlier_process(
    http_server: RangeHTTPServer, make_proxy, tmp_path: Path
) -> None:
    data = payload(SIZE, seed=2)
    http_server.put("/train.zip", data)
    proxy = make_proxy(http_server.port, cut_after=2 * MEBIBYTE, broken_connections=1)
    with pytest.raises(StorageError, match=r"failed after 1 attempt \("):
        download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip", max_attempts=1)
    kept = (tmp_path / "train.zip.part").stat().st_size
    http_server.served.clear()

    # Use the same URL as before, because the .part record names its source. The proxy
    # passes this connection unbroken.
    path = download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == data
    assert [request.range for request in http_server.served if request.method == "GET"] == [f"bytes={kept}-"]


def test_http_download_restarts_when_object_changed(http_server: RangeHTTPServer, make_proxy, tmp_path: Path) -> None:
    http_server.put("/train.zip", payload(SIZE, seed=3))
    proxy = make_proxy(http_server.port, cut_after=2 * MEBIBYTE, broken_connections=1)
    with pytest.raises(StorageError):
        download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip", max_attempts=1)
    changed = payload(SIZE, seed=4)
    http_server.put("/train.zip", changed)
    http_server.served.clear()

    path = download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip")

    assert path.read_bytes() == changed
    assert [request.range for request in http_server.served if request.method == "GET"] == [None]


def test_http_download_restarts_when_changed_during_retry(
    http_server: RangeHTTPServer, make_proxy, tmp_path: Path
) -> None:
    # The object changes between the break and the resumed request: If-Range makes the
    # server send the whole new object, and the download starts over with it.
    original = payload(SIZE, seed=5)
    changed = payload(SIZE, seed=6)
    http_server.put("/train.zip", original)
    proxy = make_proxy(http_server.port, cut_after=MEBIBYTE, broken_connections=1)

    def change_object_once(done: int, total: int | None) -> None:
        if done >= MEBIBYTE // 2 and http_server.get("/train.zip") == original:
            http_server.put("/train.zip", changed)

    path = download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip", progress=change_object_once)

    assert path.read_bytes() == changed
    gets = [request for request in http_server.served if request.method == "GET"]
    assert [request.range is None for request in gets] == [True, False, True]
    assert gets[1].if_range == etag_of(original)


def test_http_download_gives_up_after_max_attempts(http_server: RangeHTTPServer, make_proxy, tmp_path: Path) -> None:
    http_server.put("/train.zip", payload(SIZE, seed=7))
    proxy = make_proxy(http_server.port, cut_after=MEBIBYTE, broken_connections=100)

    message = r"failed after 3 attempts \(the response ended after \d+ of 4194304 bytes\); check the network"
    with pytest.raises(StorageError, match=message):
        download_file(proxied_url(proxy, "/train.zip"), tmp_path / "train.zip", max_attempts=3)

    assert proxy.cuts == 3
    assert (tmp_path / "train.zip.part").exists()
    assert not (tmp_path / "train.zip").exists()


def test_http_download_once_for_concurrent_callers(http_server: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(SIZE, seed=8)
    http_server.put("/train.zip", data)
    results: list[Path] = []
    errors: list[BaseException] = []

    def download() -> None:
        try:
            results.append(download_file(http_server.url("/train.zip"), tmp_path / "train.zip"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=download) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert results == [tmp_path / "train.zip"] * 3
    assert (tmp_path / "train.zip").read_bytes() == data
    assert [request.method for request in http_server.served].count("GET") == 1


def test_http_download_reports_missing_url(http_server: RangeHTTPServer, tmp_path: Path) -> None:
    message = r"The URL http://127.0.0.1:\d+/missing.zip was not found \(HTTP 404\); check the URL"
    with pytest.raises(StorageError, match=message):
        download_file(http_server.url("/missing.zip"), tmp_path / "missing.zip")


def test_http_download_hides_query_in_errors(http_server: RangeHTTPServer, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as raised:
        download_file(http_server.url("/missing.zip?X-Amz-Signature=s3cr3t"), tmp_path / "missing.zip")

    assert "s3cr3t" not in str(raised.value)
    assert "missing.zip?<redacted>" in str(raised.value)


def test_http_download_sends_url_credentials_as_basic_auth(
    http_server: RangeHTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http_server.put("/train.zip", b"zip bytes")
    url = http_server.url("/train.zip").replace("http://", "http://trainer:p%40ss@")

    with caplog.at_level(logging.INFO, logger="kubeclip.trainer.storage"):
        path = download_file(url, tmp_path / "train.zip")

    assert path.read_bytes() == b"zip bytes"
    expected = "Basic " + base64.b64encode(b"trainer:p@ss").decode()
    assert {request.authorization for request in http_server.served} == {expected}
    assert "p%40ss" not in caplog.text
    assert all("p%40ss" not in str(record.__dict__) for record in caplog.records)
    assert "p%40ss" not in (tmp_path / "train.zip.json").read_text()


def test_local_download_returns_source_path(tmp_path: Path) -> None:
    source = tmp_path / "train.zip"
    source.write_bytes(b"zip")

    assert download_file(str(source), tmp_path / "copy.zip") == source
    assert download_file(f"file://{source}", tmp_path / "copy.zip") == source
    assert not (tmp_path / "copy.zip").exists()


def test_local_download_reports_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zip"

    with pytest.raises(StorageError, match=rf"The file {missing} does not exist; check the path"):
        download_file(str(missing), tmp_path / "copy.zip")


def test_download_rejects_bucket_without_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'s3://my-bucket' names no object"):
        download_file("s3://my-bucket", tmp_path / "x.zip")
