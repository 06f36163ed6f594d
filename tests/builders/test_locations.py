"""The mapping of spec.output.storageUri to the location inside the trainer pod."""

from __future__ import annotations

import pytest

from kubeclip.builders.locations import StoreKind, store_kind, trainer_output


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pvc://training-output/runs/flowers", ("/mnt/output/runs/flowers", "training-output", "runs/flowers")),
        ("pvc://training-output/runs//flowers/", ("/mnt/output/runs/flowers", "training-output", "runs/flowers")),
        ("pvc://training-output/./runs", ("/mnt/output/runs", "training-output", "runs")),
        ("pvc://training-output", ("/mnt/output", "training-output", None)),
        ("pvc://training-output/", ("/mnt/output", "training-output", None)),
        ("pvc://claim.with.dots/run", ("/mnt/output/run", "claim.with.dots", "run")),
    ],
)
def test_pvc_uri_maps_to_mount(uri: str, expected: tuple[str, str, str | None]) -> None:
    assert trainer_output(uri) == expected


@pytest.mark.parametrize("uri", ["s3://models/flowers", "gs://models/flowers/", "S3://Models/run", "s3://bucket"])
def test_object_store_uri_is_unchanged(uri: str) -> None:
    assert trainer_output(uri) == (uri, None, None)


@pytest.mark.parametrize("uri", ["runs/flowers", "/data/out", "file:///data/out", "https://example.com/out", "builtin://x", ""])
def test_unreachable_output_is_rejected(uri: str) -> None:
    with pytest.raises(ValueError, match=r"spec.output.storageUri .* cannot be used in a cluster.*s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or pvc://CLAIM/PATH"):
        trainer_output(uri)


def test_bucketless_uri_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'s3:///models' names no bucket"):
        trainer_output("s3:///models")


@pytest.mark.parametrize("claim", ["Upper", "under_score", "-dash", ""])
def test_invalid_claim_name_is_rejected(claim: str) -> None:
    with pytest.raises(ValueError, match=f"names the claim '{claim}', which is not a valid PersistentVolumeClaim name"):
        trainer_output(f"pvc://{claim}/run")


def test_path_leaving_claim_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"contains '\.\.', which would leave the claim"):
        trainer_output("pvc://training-output/runs/../../etc")


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("s3://b/k", StoreKind.S3),
        ("GS://b/k", StoreKind.GCS),
        ("pvc://c/p", StoreKind.PVC),
        ("https://example.com/d.zip", StoreKind.OTHER),
        ("builtin://skimage-photos", StoreKind.OTHER),
        ("data/s3://not-a-scheme", StoreKind.OTHER),
    ],
)
def test_store_kind_from_scheme(uri: str, kind: StoreKind) -> None:
    assert store_kind(uri) == kind
