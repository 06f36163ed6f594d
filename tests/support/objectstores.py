"""Pytest fixtures that run real S3 (moto) and GCS (fake-gcs-server) servers on 127.0.0.1.

Registered for every test folder through ``pytest_plugins`` in ``tests/conftest.py``.
``s3_server`` and ``gcs_server`` start one server process per test session and create
one bucket. They change no environment variable. A test that calls the storage code
requests ``s3_env`` or ``gcs_env`` (or calls ``apply_env`` with its own monkeypatch, for
example to point the client at a proxy), which sets the variables for that test only.

fake-gcs-server is a Go program; ``scripts/install-test-servers.sh`` builds it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

FAKE_GCS_SERVER_VERSION = "v1.56.1"
FAKE_GCS_SERVER_BINARY = (
    Path.home() / ".cache" / "kubeclip" / "bin" / f"fake-gcs-server-{FAKE_GCS_SERVER_VERSION}" / "fake-gcs-server"
)
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0

# Variables that would send boto3 to real AWS, to a developer's profile, or to an
# instance metadata service. isolate_aws_environment removes them.
_AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class S3Server:
    """A running moto server, one bucket in it, and the dummy credentials it accepts."""

    endpoint_url: str
    port: int
    bucket: str
    access_key_id: str = "kubeclip-test-key"
    secret_access_key: str = "kubeclip-test-secret"
    region: str = "us-east-1"

    def apply_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, endpoint_url: str | None = None) -> None:
        """Point boto3 at this server (or ``endpoint_url``, such as a proxy) for one test."""
        isolate_aws_environment(monkeypatch, tmp_path)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint_url or self.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", self.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", self.secret_access_key)
        monkeypatch.setenv("AWS_DEFAULT_REGION", self.region)

    def client(self) -> Any:
        """Return a boto3 client for setting up objects, configured without environment variables."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )


@dataclass(frozen=True)
class GCSServer:
    """A running fake-gcs-server and one bucket in it."""

    endpoint: str
    port: int
    bucket: str

    def apply_env(self, monkeypatch: pytest.MonkeyPatch, *, endpoint: str | None = None) -> None:
        """Point the GCS client at this server (or ``endpoint``, such as a proxy) for one test."""
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint or self.endpoint)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)

    def client(self) -> storage.Client:
        """Return a GCS client for setting up objects, configured without environment variables."""
        return storage.Client(
            project="kubeclip-test",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide every credential source boto3 could find, so a test uses only the credentials it sets.

    HOME points at an empty directory, the config and credentials files at paths that
    do not exist, and the instance metadata service is disabled, so boto3 never tries
    to reach 169.254.169.254.
    """
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "missing-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", *_AWS_VARIABLES_TO_CLEAR):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Run moto's S3 server on 127.0.0.1 for the session, with the bucket ``kubeclip-test``."""
    with _moto_server(tmp_path_factory, {}) as server:
        server.client().create_bucket(Bucket=server.bucket)
        yield server


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Run a second moto server that checks credentials, so every request with the dummy key gets a 403.

    moto enforces authentication after INITIAL_NO_AUTH_ACTION_COUNT unauthenticated
    requests. With 0 it checks every request, and it knows no access key, so it responds to
    HEAD with 403 and other requests with InvalidAccessKeyId. The server has no bucket.
    """
    with _moto_server(tmp_path_factory, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """Run fake-gcs-server on 127.0.0.1 for the session, with the bucket ``kubeclip-test``."""
    if not FAKE_GCS_SERVER_BINARY.is_file():
        pytest.fail(
            f"fake-gcs-server is not installed at {FAKE_GCS_SERVER_BINARY}; run scripts/install-test-servers.sh "
            f"(needs Go and the Go module proxy) and run the tests again."
        )
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs-server.log"
    command = [
        str(FAKE_GCS_SERVER_BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "memory", "-public-host", address, "-external-url", f"http://{address}", "-log-level", "warn",
    ]  # fmt: skip
    with _running(command, log_path) as process:
        server = GCSServer(endpoint=f"http://{address}", port=port, bucket="kubeclip-test")
        _wait_for_http(server.endpoint + "/storage/v1/b", process, log_path)
        _create_gcs_bucket(server)
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """Set the AWS variables that point boto3 at ``s3_server`` for one test."""
    s3_server.apply_env(monkeypatch, tmp_path)
    return s3_server


@pytest.fixture
def gcs_env(gcs_server: GCSServer, monkeypatch: pytest.MonkeyPatch) -> GCSServer:
    """Set STORAGE_EMULATOR_HOST to ``gcs_server`` for one test."""
    gcs_server.apply_env(monkeypatch)
    return gcs_server


def wait_until(condition: Callable[[], bool], *, timeout: float, description: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it returns True; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting until {description}.")
        time.sleep(interval)


@contextmanager
def _running(
    command: list[str], log_path: Path, environment: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process with its output in ``log_path``, and stop it on exit: terminate, wait, then kill."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(environment or {})})
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextmanager
def _moto_server(tmp_path_factory: pytest.TempPathFactory, environment: dict[str, str]) -> Iterator[S3Server]:
    port = _free_port()
    moto_server = Path(sys.executable).parent / "moto_server"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    command = [str(moto_server), "-H", "127.0.0.1", "-p", str(port)]
    with _running(command, log_path, environment) as process:
        server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", port=port, bucket="kubeclip-test")
        _wait_for_http(server.endpoint_url + "/", process, log_path)
        yield server


def _wait_for_http(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    def is_ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with code {process.returncode}:\n{log_path.read_text()}")
        return _answers_http(url)

    wait_until(is_ready, timeout=STARTUP_TIMEOUT_SECONDS, description=f"{url} answers")


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _create_gcs_bucket(server: GCSServer) -> None:
    # Plain JSON API call, so the fixture does not depend on the code under test.
    request = urllib.request.Request(
        f"{server.endpoint}/storage/v1/b?project=kubeclip-test",
        data=json.dumps({"name": server.bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"creating bucket {server.bucket} returned HTTP {response.status}"


def _free_port() -> int:
    # The port is free when this returns. Another process could take it before the
    # server binds it, and the fixture then fails with the server's log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
