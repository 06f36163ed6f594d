"""Fixtures for the storage tests: S3 and GCS behind one interface, proxies, and an HTTP file server."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeclip.trainer.storage import download
from tests.support.breaking_proxy import BreakingProxy
from tests.support.objectstores import GCSServer, S3Server
from tests.support.range_http_server import RangeHTTPServer

MEBIBYTE = 1024 * 1024


@dataclass
class ObjectStore:
    """One object store (S3 or GCS) as the parametrized download and remote tests use it.

    ``use_endpoint`` sets the environment variables for this test, pointing the client
    at the server itself or at another URL such as a proxy in front of it.
    """

    scheme: str
    bucket: str
    port: int
    prefix: str
    put: Callable[[str, bytes], None]
    use_endpoint: Callable[[str | None], None]

    def uri(self, name: str) -> str:
        """Return the URI of ``name`` below this test's own prefix."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}/{name}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the retry delays, so a test with broken connections waits milliseconds, not seconds."""
    monkeypatch.setattr(download, "RETRY_BASE_DELAY_SECONDS", 0.01)
    monkeypatch.setattr(download, "RETRY_MAX_DELAY_SECONDS", 0.05)


@pytest.fixture(params=["s3", "gs"])
def object_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectStore:
    """The S3 or the GCS test server, with a fresh key prefix for this test and the environment set."""
    return _start_object_store(request.param, request, monkeypatch, tmp_path)


@pytest.fixture(params=["file", "s3", "gs"])
def output_root(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The URI of a fresh, empty output location on the local disk, S3 or GCS, with the environment set."""
    if request.param == "file":
        return f"file://{tmp_path / 'output'}"
    store = _start_object_store(request.param, request, monkeypatch, tmp_path)
    return f"{store.scheme}://{store.bucket}/{store.prefix}"


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., BreakingProxy]]:
    """Return a factory of started BreakingProxy objects. All of them stop after the test."""
    proxies: list[BreakingProxy] = []

    def start(target_port: int, **options: int | None) -> BreakingProxy:
        proxy = BreakingProxy(target_port, **options).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def http_server() -> Iterator[RangeHTTPServer]:
    server = RangeHTTPServer().start()
    yield server
    server.stop()


def payload(size: int, seed: int = 0) -> bytes:
    """Return ``size`` pseudo-random bytes. Other seeds give other bytes, so shifted or mixed data is detected."""
    return random.Random(seed).randbytes(size)


def _start_object_store(
    scheme: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ObjectStore:
    # Each test gets its own prefix in the session's shared bucket.
    prefix = uuid.uuid4().hex
    if scheme == "s3":
        return _s3_store(request.getfixturevalue("s3_server"), prefix, monkeypatch, tmp_path)
    return _gcs_store(request.getfixturevalue("gcs_server"), prefix, monkeypatch)


def _s3_store(server: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectStore:
    client = server.client()

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=server.bucket, Key=key, Body=data)

    def use_endpoint(endpoint: str | None) -> None:
        server.apply_env(monkeypatch, tmp_path, endpoint_url=endpoint)

    use_endpoint(None)
    return ObjectStore("s3", server.bucket, server.port, prefix, put, use_endpoint)


def _gcs_store(server: GCSServer, prefix: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    bucket = server.client().bucket(server.bucket)

    def put(key: str, data: bytes) -> None:
        bucket.blob(key).upload_from_string(data)

    def use_endpoint(endpoint: str | None) -> None:
        server.apply_env(monkeypatch, endpoint=endpoint)

    use_endpoint(None)
    return ObjectStore("gs", server.bucket, server.port, prefix, put, use_endpoint)
