"""Tests of the directory-like operations in remote.py on local paths, S3 (moto) and GCS (fake-gcs-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeclip.trainer.errors import ConfigError, CredentialsError, StorageError
from kubeclip.trainer.storage import remote
from tests.storage.conftest import MEBIBYTE, ObjectStore, payload
from tests.support.objectstores import S3Server

pytestmark = pytest.mark.objectstore


def make_checkpoint(root: Path, step: int) -> Path:
    directory = root / f"checkpoint-{step}"
    (directory / "optimizer").mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(payload(MEBIBYTE + step, seed=step))
    (directory / "optimizer" / "state.pt").write_bytes(f"optimizer {step}".encode())
    return directory


def test_upload_directory_then_download_round_trips(output_root: str, tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "local", 100)

    uploaded = remote.upload_directory(source, f"{output_root}/checkpoint-100")
    names = remote.download_directory(f"{output_root}/checkpoint-100", tmp_path / "restored")

    assert uploaded == ["model.safetensors", "optimizer/state.pt"]
    assert sorted(names) == uploaded
    for name in uploaded:
        assert (tmp_path / "restored" / name).read_bytes() == (source / name).read_bytes()


def test_list_children_returns_subdirectories(output_root: str, tmp_path: Path) -> None:
    for step in (100, 200, 50):
        remote.upload_directory(make_checkpoint(tmp_path / "local", step), f"{output_root}/checkpoint-{step}")
    remote.write_bytes(f"{output_root}/latest.txt", b"checkpoint-200")

    assert remote.list_children(output_root) == ["checkpoint-100", "checkpoint-200", "checkpoint-50"]
    assert remote.list_children(f"{output_root}/checkpoint-100") == ["optimizer"]
    assert remote.list_children(f"{output_root}/nothing-here") == []


def test_exists_finds_files_and_prefixes(output_root: str, tmp_path: Path) -> None:
    remote.upload_directory(make_checkpoint(tmp_path / "local", 1), f"{output_root}/checkpoint-1")

    assert remote.exists(f"{output_root}/checkpoint-1")
    assert remote.exists(f"{output_root}/checkpoint-1/")
    assert remote.exists(f"{output_root}/checkpoint-1/model.safetensors")
    assert not remote.exists(f"{output_root}/checkpoint-2")
    # A sibling whose name starts with the same characters is not inside the prefix.
    assert not remote.exists(f"{output_root}/checkpoint-")


def test_write_bytes_then_read_bytes(output_root: str) -> None:
    remote.write_bytes(f"{output_root}/run/latest.txt", b"checkpoint-100")
    remote.write_bytes(f"{output_root}/run/latest.txt", b"checkpoint-200")

    assert remote.read_bytes(f"{output_root}/run/latest.txt") == b"checkpoint-200"


def test_upload_file_places_single_file(output_root: str, tmp_path: Path) -> None:
    local = tmp_path / "COMPLETE"
    local.write_bytes(b"done")

    remote.upload_file(local, f"{output_root}/checkpoint-1/COMPLETE")

    assert remote.read_bytes(f"{output_root}/checkpoint-1/COMPLETE") == b"done"


def test_delete_tree_removes_only_that_prefix(output_root: str, tmp_path: Path) -> None:
    remote.upload_directory(make_checkpoint(tmp_path / "local", 1), f"{output_root}/checkpoint-1")
    remote.upload_directory(make_checkpoint(tmp_path / "local", 10), f"{output_root}/checkpoint-10")

    remote.delete_tree(f"{output_root}/checkpoint-1")
    remote.delete_tree(f"{output_root}/never-written")

    assert not remote.exists(f"{output_root}/checkpoint-1")
    assert remote.list_children(output_root) == ["checkpoint-10"]
    assert remote.read_bytes(f"{output_root}/checkpoint-10/optimizer/state.pt") == b"optimizer 10"


def test_read_bytes_reports_missing_file(output_root: str) -> None:
    with pytest.raises(StorageError, match=r"missing.txt.*(was not found|does not exist).*check the"):
        remote.read_bytes(f"{output_root}/missing.txt")


def test_download_directory_reports_empty_location(output_root: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"No files were found below .*/checkpoint-9; check the location"):
        remote.download_directory(f"{output_root}/checkpoint-9", tmp_path / "restored")


def test_upload_directory_reports_missing_directory(output_root: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"Cannot upload {tmp_path / 'nope'} to .*: it is not a directory"):
        remote.upload_directory(tmp_path / "nope", f"{output_root}/checkpoint-1")


def test_download_directory_rejects_keys_outside_target(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put(object_store.key("checkpoint-1/../../escape.txt"), b"x")

    message = r"'\.\./\.\./escape\.txt' below .* would be written outside .*; rename or delete that object"
    with pytest.raises(StorageError, match=message):
        remote.download_directory(object_store.uri("checkpoint-1"), tmp_path / "restored" / "inner")

    assert not (tmp_path / "escape.txt").exists()


def test_exists_reports_missing_bucket(object_store: ObjectStore) -> None:
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-kubeclip' does not exist .* check the bucket name"):
        remote.exists(f"{object_store.scheme}://no-such-bucket-kubeclip/runs/checkpoint-1")


def test_delete_tree_refuses_bucket_root(object_store: ObjectStore) -> None:
    with pytest.raises(ConfigError, match=r"Deleting the whole bucket .* is not allowed; name a prefix inside it"):
        remote.delete_tree(f"{object_store.scheme}://{object_store.bucket}/")


def test_remote_rejects_http_locations() -> None:
    message = r"is an HTTP URL, which can only be downloaded from; use a local path, s3:// or gs://"
    with pytest.raises(ConfigError, match=message):
        remote.write_bytes("https://example.test/out/latest.txt", b"x")


def test_local_paths_work_without_file_scheme(tmp_path: Path) -> None:
    remote.write_bytes(str(tmp_path / "out" / "a.txt"), b"a")

    assert remote.list_children(str(tmp_path)) == ["out"]
    assert remote.read_bytes(f"file://{tmp_path}/out/a.txt") == b"a"


def test_s3_read_with_rejected_credentials(s3_auth_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3_auth_server.apply_env(monkeypatch, tmp_path)

    message = r"S3 rejected the request to read s3://kubeclip-test/latest.txt \(InvalidAccessKeyId: .*\); check that"
    with pytest.raises(CredentialsError, match=message):
        remote.read_bytes(f"s3://{s3_auth_server.bucket}/latest.txt")
