"""Tests of parse_location and Location."""

from __future__ import annotations

import pytest

from kubeclip.trainer.errors import ConfigError
from kubeclip.trainer.storage.uri import Location, parse_location


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data/train.zip", Location("file", None, "data/train.zip")),
        ("/mnt/data/train.zip", Location("file", None, "/mnt/data/train.zip")),
        ("file:///mnt/data/train.zip", Location("file", None, "/mnt/data/train.zip")),
        ("file://localhost/mnt/a%20b.zip", Location("file", None, "/mnt/a b.zip")),
        ("s3://my-bucket/datasets/train.zip", Location("s3", "my-bucket", "datasets/train.zip")),
        ("s3://my-bucket", Location("s3", "my-bucket", "")),
        ("s3://my-bucket/", Location("s3", "my-bucket", "")),
        ("gs://my.bucket_1/runs/job-1/", Location("gs", "my.bucket_1", "runs/job-1/")),
        ("s3://b12/odd?key#name", Location("s3", "b12", "odd?key#name")),
        ("https://example.test/data/train.zip?x=1", Location("https", None, "example.test/data/train.zip?x=1")),
        ("http://127.0.0.1:8080/a.zip", Location("http", None, "127.0.0.1:8080/a.zip")),
    ],
)
def test_parse_location_accepts(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is empty; expected a local path, file:///absolute/path, s3://bucket/key"),
        ("   ", r"is empty"),
        ("ftp://host/file.zip", r"'ftp://host/file.zip' has the unsupported scheme 'ftp'; expected .*s3://bucket/key"),
        ("s3:///key.zip", r"'s3:///key.zip' has an empty bucket name; write s3://bucket/key"),
        ("gs://", r"'gs://' has an empty bucket name; write gs://bucket/key"),
        ("s3://a/key", r"invalid bucket name 'a'; a bucket name has 3 to 222"),
        ("s3://bad bucket/key", r"invalid bucket name 'bad bucket'"),
        ("file://server/share/x.zip", r"names the host 'server'.*file:///absolute/path"),
        ("https:///path.zip", r"has no host name; write https://host/path"),
        ("http://host:99999/a.zip", r"has an invalid port; write http://host:port/path"),
    ],
)
def test_parse_location_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_location(text)


@pytest.mark.parametrize("text", ["s3://my-bucket", "s3://my-bucket/", "gs://my-bucket/runs/"])
def test_parse_location_requires_object_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"names no object, but a file download needs one; write .*://my-bucket/path/to/file"):
        parse_location(text, require_key=True)


def test_parse_location_hides_url_secrets_in_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_location("ftp://user:hunter2@host/a.zip?token=s3cr3t")

    assert "hunter2" not in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    assert "ftp://host/a.zip?<redacted>" in str(raised.value)


@pytest.mark.parametrize(
    "text",
    ["s3://my-bucket/datasets/train.zip", "gs://my-bucket/runs/job-1", "s3://my-bucket", "/mnt/data/train.zip"],
)
def test_location_str_round_trips(text: str) -> None:
    assert str(parse_location(text)) == text


def test_location_str_hides_http_credentials() -> None:
    location = parse_location("https://user:pw@example.test/train.zip?X-Amz-Signature=abc")

    assert str(location) == "https://example.test/train.zip?<redacted>"
    assert location.url == "https://user:pw@example.test/train.zip?X-Amz-Signature=abc"


@pytest.mark.parametrize(
    ("parent", "name", "expected"),
    [
        ("s3://b12/runs/job-1", "checkpoint-100", "s3://b12/runs/job-1/checkpoint-100"),
        ("s3://b12/runs/job-1/", "checkpoint-100", "s3://b12/runs/job-1/checkpoint-100"),
        ("gs://b12", "model/weights.safetensors", "gs://b12/model/weights.safetensors"),
        ("/tmp/out", "checkpoint-1/state.pt", "/tmp/out/checkpoint-1/state.pt"),
        ("https://example.test/data/", "a b.zip", "https://example.test/data/a%20b.zip"),
    ],
)
def test_location_child_joins_segments(parent: str, name: str, expected: str) -> None:
    assert str(parse_location(parent).child(name)) == expected


@pytest.mark.parametrize("name", ["", "/abs", "../up", "a//b", "a/./b"])
def test_location_child_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(ConfigError, match=r"Child name .* is invalid; use a relative name"):
        parse_location("s3://b12/runs").child(name)


def test_location_name_and_prefix() -> None:
    location = parse_location("s3://b12/runs/job-1/")

    assert location.name == "job-1"
    assert location.directory_prefix == "runs/job-1/"
    assert parse_location("s3://b12").directory_prefix == ""
