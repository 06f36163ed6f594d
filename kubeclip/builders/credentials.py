"""The environment variables and volumes that give the trainer pod its store credentials.

Credentials reach the trainer only through ``secretKeyRef`` variables and a Secret
volume, never as values in the pod spec, the trainer config, arguments or logs. boto3
and google-cloud-storage read one set of variables per process, so the dataset and the
output can share a store kind only if they share the Secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeclip.builders.locations import StoreKind, store_kind

#: Folder where the GCS service-account Secret is mounted.
GCS_CREDENTIALS_MOUNT_PATH = "/var/run/secrets/kubeclip/gcs"
#: Key of the service-account JSON in a GCS credentials Secret.
GCS_CREDENTIALS_KEY = "service-account.json"
GCS_CREDENTIALS_VOLUME = "gcs-credentials"
#: Keys of an S3 credentials Secret that boto3 needs; each becomes the variable of the same name.
S3_REQUIRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
#: Keys that only some stores need: temporary credentials and S3-compatible endpoints.
S3_OPTIONAL_KEYS = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
# Read-only for the owner (root) and the pod's fsGroup, which the trainer runs in.
_SECRET_FILE_MODE = 0o440
_CREDENTIAL_VARIABLES = {
    StoreKind.S3: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    StoreKind.GCS: "GOOGLE_APPLICATION_CREDENTIALS",
}


class CredentialConflict(ValueError):
    """The dataset and the output are on the same kind of store but name different Secrets."""


@dataclass(frozen=True)
class CredentialSource:
    """One store the trainer uses and the Secret with its credentials."""

    #: The job field that names the Secret, such as ``spec.output.secretRef``; used in messages.
    field: str
    #: Location in that store: the dataset source or the output storage URI.
    uri: str
    #: Secret named by the job, in the job's namespace; None when the job names none.
    secret_ref: str | None
    #: Secret the pod reads in the target namespace: ``secret_ref`` itself, or its copy
    #: in a BringYourOwn cluster. None gives the pod no credentials for this store.
    target_secret: str | None


@dataclass(frozen=True)
class StoreCredentials:
    """Pod spec parts that pass the credentials to the trainer container."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)


def build_store_credentials(sources: list[CredentialSource]) -> StoreCredentials:
    """Build the variables and volumes for the Secrets of ``sources``.

    Only ``s3://`` and ``gs://`` locations use a Secret; any other location ignores its
    Secret. When both sources are on the same kind of store and one of them has no
    Secret, the other's variables apply to both, because the client libraries read one
    set per process.

    Raises:
        CredentialConflict: two sources on the same kind of store name different Secrets.
    """
    secrets = _secret_per_store_kind(sources)
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    volume_mounts: list[dict[str, Any]] = []
    if StoreKind.S3 in secrets:
        env.extend(_s3_variables(secrets[StoreKind.S3]))
    if StoreKind.GCS in secrets:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_CREDENTIALS_MOUNT_PATH}/{GCS_CREDENTIALS_KEY}"})
        volumes.append(_gcs_volume(secrets[StoreKind.GCS]))
        volume_mounts.append({"name": GCS_CREDENTIALS_VOLUME, "mountPath": GCS_CREDENTIALS_MOUNT_PATH, "readOnly": True})
    return StoreCredentials(env, volumes, volume_mounts)


def _secret_per_store_kind(sources: list[CredentialSource]) -> dict[StoreKind, str]:
    """Pick the target Secret of each store kind, and reject two different Secrets for one kind.

    Sources are compared by the Secret the job names, because a BringYourOwn cluster can
    hold two copies (with two names) of the one Secret that both fields name.
    """
    chosen: dict[StoreKind, CredentialSource] = {}
    secrets: dict[StoreKind, str] = {}
    for source in sources:
        kind = store_kind(source.uri)
        if kind not in _CREDENTIAL_VARIABLES or source.target_secret is None:
            continue
        earlier = chosen.get(kind)
        if earlier is None:
            chosen[kind] = source
            secrets[kind] = source.target_secret
        elif _identity(earlier) != _identity(source):
            raise CredentialConflict(_conflict_message(kind, earlier, source))
    return secrets


def _identity(source: CredentialSource) -> str | None:
    return source.secret_ref or source.target_secret


def _conflict_message(kind: StoreKind, first: CredentialSource, second: CredentialSource) -> str:
    store = "S3" if kind == StoreKind.S3 else "GCS"
    return (
        f"{first.field} names Secret {_identity(first)!r} and {second.field} names Secret {_identity(second)!r}, "
        f"but both locations are on {store} and the trainer reads one set of {_CREDENTIAL_VARIABLES[kind]}; "
        f"put credentials that can read the dataset and write the output into one Secret and name it in both fields"
    )


def _s3_variables(secret: str) -> list[dict[str, Any]]:
    required = [_secret_variable(key, secret, optional=False) for key in S3_REQUIRED_KEYS]
    optional = [_secret_variable(key, secret, optional=True) for key in S3_OPTIONAL_KEYS]
    return required + optional


def _secret_variable(key: str, secret: str, *, optional: bool) -> dict[str, Any]:
    reference: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        reference["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": reference}}


def _gcs_volume(secret: str) -> dict[str, Any]:
    return {
        "name": GCS_CREDENTIALS_VOLUME,
        "secret": {
            "secretName": secret,
            # Only the one key, so a Secret shared with S3 does not put AWS keys into files.
            "items": [{"key": GCS_CREDENTIALS_KEY, "path": GCS_CREDENTIALS_KEY}],
            "defaultMode": _SECRET_FILE_MODE,
        },
    }
