"""Tests of the .part file and record handling in partial.py, on the local file system only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kubeclip.trainer.storage.objects import Checksum, ChecksumMismatchError, ObjectInfo
from kubeclip.trainer.storage.partial import DownloadPaths, PartWriter, finish_part, is_cached, prepare_part

SOURCE = "s3://bucket-1/train.zip"
INFO = ObjectInfo(size=10, version='"etag-1"')


@pytest.fixture
def paths(tmp_path: Path) -> DownloadPaths:
    return DownloadPaths(tmp_path / "train.zip")


def write_part(paths: DownloadPaths, data: bytes, *, source: str, info: ObjectInfo) -> None:
    paths.part.write_bytes(data)
    paths.part_record.write_text(json.dumps({"source": source, "size": info.size, "version": info.version}))


def test_prepare_part_keeps_bytes_of_same_version(paths: DownloadPaths) -> None:
    write_part(paths, b"0123", source=SOURCE, info=INFO)

    assert prepare_part(paths, SOURCE, INFO) == 4
    assert paths.part.read_bytes() == b"0123"


@pytest.mark.parametrize(
    ("record_source", "record_info", "current"),
    [
        pytest.param(SOURCE, ObjectInfo(10, '"etag-0"'), INFO, id="other-version"),
        pytest.param("s3://bucket-1/other.zip", INFO, INFO, id="other-source"),
        pytest.param(SOURCE, ObjectInfo(10, None), ObjectInfo(10, None), id="no-version"),
        pytest.param(SOURCE, ObjectInfo(3, '"etag-1"'), ObjectInfo(3, '"etag-1"'), id="longer-than-object"),
    ],
)
def test_prepare_part_discards_stale_bytes(
    paths: DownloadPaths, record_source: str, record_info: ObjectInfo, current: ObjectInfo
) -> None:
    write_part(paths, b"0123", source=record_source, info=record_info)

    assert prepare_part(paths, SOURCE, current) == 0
    assert not paths.part.exists()
    assert json.loads(paths.part_record.read_text())["version"] == current.version


def test_prepare_part_discards_part_without_record(paths: DownloadPaths) -> None:
    paths.part.write_bytes(b"0123")

    assert prepare_part(paths, SOURCE, INFO) == 0
    assert not paths.part.exists()


def test_part_writer_hashes_kept_prefix(paths: DownloadPaths) -> None:
    data = b"0123456789"
    checksum = Checksum("md5", hashlib.md5(data).digest())
    paths.part.write_bytes(data[:4] + b"garbage")

    writer = PartWriter(paths.part, 4, checksum)
    writer.write(data[4:])
    writer.close()

    assert paths.part.read_bytes() == data
    assert writer.digest() == checksum.digest


def test_finish_part_renames_and_records(paths: DownloadPaths) -> None:
    prepare_part(paths, SOURCE, INFO)
    writer = PartWriter(paths.part, 0, None)
    writer.write(b"0123456789")
    writer.close()

    finish_part(paths, SOURCE, INFO, writer)

    assert paths.destination.read_bytes() == b"0123456789"
    assert not paths.part.exists()
    assert not paths.part_record.exists()
    assert is_cached(paths, SOURCE, INFO)


def test_finish_part_deletes_part_on_checksum_mismatch(paths: DownloadPaths) -> None:
    info = ObjectInfo(size=10, version="7", checksum=Checksum("crc32c", b"\x00\x00\x00\x00"))
    prepare_part(paths, SOURCE, info)
    writer = PartWriter(paths.part, 0, info.checksum)
    writer.write(b"0123456789")
    writer.close()

    message = r"crc32c checksum of the 10 bytes downloaded from s3://bucket-1/train.zip does not match"
    with pytest.raises(ChecksumMismatchError, match=message):
        finish_part(paths, SOURCE, info, writer)

    assert not paths.part.exists()
    assert not paths.destination.exists()


@pytest.mark.parametrize(
    ("current", "content"),
    [
        pytest.param(ObjectInfo(10, '"etag-2"'), b"0123456789", id="other-version"),
        pytest.param(INFO, b"012345678", id="other-size-on-disk"),
        pytest.param(ObjectInfo(10, None), b"0123456789", id="no-version"),
    ],
)
def test_is_cached_rejects_mismatch(paths: DownloadPaths, current: ObjectInfo, content: bytes) -> None:
    paths.destination.write_bytes(content)
    paths.cache_record.write_text(json.dumps({"source": SOURCE, "size": INFO.size, "version": INFO.version}))

    assert not is_cached(paths, SOURCE, current)
