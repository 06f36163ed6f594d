"""Storage locations of a job, mapped to what the trainer pod uses.

A job names its data and output with URIs. In a pod, ``s3://`` and ``gs://`` stay as
they are and get credentials from environment variables, while ``pvc://CLAIM/PATH``
becomes a volume mounted at ``/mnt/output``. This module decides both.
"""

from __future__ import annotations

import enum
import posixpath
import re

#: Mount point of the output PersistentVolumeClaim in the trainer container.
OUTPUT_MOUNT_PATH = "/mnt/output"
ACCEPTED_OUTPUT_FORMS = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or pvc://CLAIM/PATH"

# A PersistentVolumeClaim name is a DNS subdomain.
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreKind(str, enum.Enum):
    """The kind of store a URI points to, which decides the credentials the pod needs."""

    S3 = "s3"
    GCS = "gs"
    PVC = "pvc"
    #: Any other location (https://, builtin://, a local path): no credentials from a Secret.
    OTHER = "other"


def store_kind(uri: str) -> StoreKind:
    """Return the store kind of ``uri`` from its scheme, which is case-insensitive as in the trainer."""
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    for kind in (StoreKind.S3, StoreKind.GCS, StoreKind.PVC):
        if scheme == kind.value:
            return kind
    return StoreKind.OTHER


def trainer_output(storage_uri: str) -> tuple[str, str | None, str | None]:
    """Map ``spec.output.storageUri`` to the output location inside the trainer pod.

    Returns:
        ``(location, claim, sub_path)``. For ``pvc://CLAIM/PATH`` that is
        ``("/mnt/output/PATH", "CLAIM", "PATH")``, with ``sub_path`` None when the URI
        names the whole claim. For ``s3://`` and ``gs://`` it is ``(storage_uri, None, None)``.

    Raises:
        ValueError: the URI is empty, has another scheme (a local path cannot reach a pod),
            names no bucket, or names an invalid claim or a path with ``..``.
    """
    kind = store_kind(storage_uri)
    if kind in (StoreKind.S3, StoreKind.GCS):
        _check_bucket(storage_uri)
        return storage_uri, None, None
    if kind == StoreKind.PVC:
        claim, sub_path = _split_claim_uri(storage_uri)
        location = posixpath.join(OUTPUT_MOUNT_PATH, sub_path) if sub_path else OUTPUT_MOUNT_PATH
        return location, claim, sub_path
    raise ValueError(
        f"spec.output.storageUri {storage_uri!r} cannot be used in a cluster because the trainer pod cannot reach it; "
        f"use {ACCEPTED_OUTPUT_FORMS}"
    )


def _check_bucket(storage_uri: str) -> None:
    bucket = storage_uri.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        raise ValueError(f"spec.output.storageUri {storage_uri!r} names no bucket; use {ACCEPTED_OUTPUT_FORMS}")


def _split_claim_uri(storage_uri: str) -> tuple[str, str | None]:
    claim, _, path = storage_uri.split("://", 1)[1].partition("/")
    if not _CLAIM_NAME.match(claim) or len(claim) > 253:
        raise ValueError(
            f"spec.output.storageUri {storage_uri!r} names the claim {claim!r}, which is not a valid PersistentVolumeClaim name; "
            f"use {ACCEPTED_OUTPUT_FORMS} with the claim's name as kubectl get pvc shows it"
        )
    segments = [segment for segment in path.split("/") if segment and segment != "."]
    if ".." in segments:
        raise ValueError(
            f"spec.output.storageUri {storage_uri!r} contains '..', which would leave the claim; use a path inside the claim"
        )
    return claim, "/".join(segments) or None
