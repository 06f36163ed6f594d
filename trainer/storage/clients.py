"""Build S3 and GCS clients and translate their errors into StorageError and CredentialsError.

Called by the S3 and GCS stores (``s3_store``, ``gcs_store``), which the download and
directory functions of this package use. Messages name the location and what to change.
They never contain a credential value.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import google.api_core.exceptions
import google.auth.exceptions
import requests.exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from kubeclip.trainer.errors import CredentialsError, MissingLocationError, StorageError

if TYPE_CHECKING:
    from kubeclip.trainer.storage.uri import Location

logger = logging.getLogger(__name__)

#: Total tries per S3 request, counting the first, for botocore's "standard" retry mode,
#: which retries throttling, 5xx responses and connection errors with backoff.
S3_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_SECONDS = 20
READ_TIMEOUT_SECONDS = 60

#: Project name for the GCS client when STORAGE_EMULATOR_HOST is set. An emulator has no
#: real projects, but the client sends a project with bucket creation and listing requests.
EMULATOR_PROJECT = "kubeclip-emulator"

S3_CREDENTIAL_SOURCES = (
    "boto3 reads S3 credentials from the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment "
    "variables, from the profile named by AWS_PROFILE or by the job's profile setting, from the shared "
    "credentials file (~/.aws/credentials, or the file named by AWS_SHARED_CREDENTIALS_FILE), or from "
    "the pod's or instance's IAM role"
)
GCS_CREDENTIAL_SOURCES = (
    "the GCS client reads credentials from the service-account JSON file named by "
    "GOOGLE_APPLICATION_CREDENTIALS, or from application default credentials "
    "('gcloud auth application-default login', or the workload identity of the pod or VM)"
)

_S3_CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "403",
        "Forbidden",
    }
)
_S3_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

_S3_CONNECTION_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
)
_GCS_CONNECTION_ERRORS = (
    requests.exceptions.RequestException,
    google.auth.exceptions.TransportError,
    ConnectionError,
)


def make_s3_client(*, region: str | None = None, profile: str | None = None) -> Any:
    """Build a boto3 S3 client with standard-mode retries.

    boto3 reads the endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL when set, which
    is how an on-premise store (MinIO, Ceph) is reached, so no endpoint is passed here.
    Raises CredentialsError when ``profile`` does not exist or the credentials found are incomplete.
    """
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        # Creating the client already loads the credentials, so incomplete ones fail here.
        client = session.client("s3", config=config)
    except botocore.exceptions.ProfileNotFound as err:
        raise CredentialsError(
            f"The AWS profile {profile!r} was not found in the AWS config or shared credentials file; "
            f"add it there or choose another profile. {S3_CREDENTIAL_SOURCES}."
        ) from err
    except botocore.exceptions.PartialCredentialsError as err:
        raise CredentialsError(
            f"The S3 credentials from {err.kwargs.get('provider')} are incomplete "
            f"(missing: {err.kwargs.get('cred_var')}); set both the access key ID and the secret access key. "
            f"{S3_CREDENTIAL_SOURCES}."
        ) from err
    except botocore.exceptions.CredentialRetrievalError as err:
        # The error text can contain a credential process's output, so only the provider is shown.
        raise CredentialsError(
            f"Loading S3 credentials from {err.kwargs.get('provider')} failed; check that source's "
            f"configuration. {S3_CREDENTIAL_SOURCES}."
        ) from err
    logger.debug("S3 client created", extra={"endpoint": client.meta.endpoint_url, "region": client.meta.region_name})
    return client


def make_gcs_client(*, credentials_file: str | None = None) -> storage.Client:
    """Build a GCS client from a service-account JSON file, or from default credentials.

    When STORAGE_EMULATOR_HOST is set, the client talks to that emulator with anonymous
    credentials and a placeholder project, so no real credentials are needed or sent.
    """
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        logger.debug("GCS client uses an emulator", extra={"endpoint": emulator})
        return storage.Client(project=EMULATOR_PROJECT, credentials=AnonymousCredentials())
    try:
        if credentials_file is not None:
            return storage.Client.from_service_account_json(credentials_file)
        return storage.Client()
    except FileNotFoundError as err:
        raise CredentialsError(
            f"The GCS service-account file {credentials_file!r} was not found; create it or point the "
            f"setting at an existing file. {GCS_CREDENTIAL_SOURCES}."
        ) from err
    except (ValueError, google.auth.exceptions.DefaultCredentialsError) as err:
        raise CredentialsError(f"No usable GCS credentials were found ({err}); {GCS_CREDENTIAL_SOURCES}.") from err


def s3_error_code(err: botocore.exceptions.ClientError) -> str:
    """Return the S3 error code, such as ``NoSuchKey``, or the HTTP status for HEAD responses, which have no body."""
    return str(err.response.get("Error", {}).get("Code", ""))


def s3_status(err: botocore.exceptions.ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_s3_not_found(err: Exception) -> bool:
    return isinstance(err, botocore.exceptions.ClientError) and s3_error_code(err) in _S3_MISSING_KEY_CODES


def is_s3_connection_error(err: Exception) -> bool:
    return isinstance(err, _S3_CONNECTION_ERRORS)


def is_gcs_connection_error(err: Exception) -> bool:
    return isinstance(err, _GCS_CONNECTION_ERRORS)


def s3_storage_error(err: Exception, location: Location, action: str) -> StorageError:
    """Translate a boto3 exception raised while doing ``action`` (such as "download") on ``location``."""
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return CredentialsError(f"No S3 credentials were found to {action} {location}; {S3_CREDENTIAL_SOURCES}.")
    if isinstance(err, botocore.exceptions.PartialCredentialsError):
        return CredentialsError(
            f"The S3 credentials found to {action} {location} are incomplete (missing: {err.kwargs.get('cred_var')}); "
            f"set both the access key ID and the secret access key. {S3_CREDENTIAL_SOURCES}."
        )
    if isinstance(err, botocore.exceptions.ClientError):
        return _s3_client_error(err, location, action)
    if is_s3_connection_error(err):
        return StorageError(
            f"Could not reach the S3 endpoint to {action} {location} ({err}); check the network, and "
            f"AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 if the bucket is on an on-premise store."
        )
    return StorageError(f"Failed to {action} {location} ({type(err).__name__}: {err}).")


def _s3_client_error(err: botocore.exceptions.ClientError, location: Location, action: str) -> StorageError:
    code = s3_error_code(err)
    message = err.response.get("Error", {}).get("Message", "")
    if code in _S3_CREDENTIAL_CODES:
        return CredentialsError(
            f"S3 rejected the request to {action} {location} ({code}: {message}); check that the "
            f"credentials are valid and allowed to access bucket {location.bucket!r}. {S3_CREDENTIAL_SOURCES}."
        )
    if code == "NoSuchBucket":
        return MissingLocationError(
            f"The S3 bucket {location.bucket!r} does not exist (needed to {action} {location}); check the bucket "
            f"name, and the endpoint (AWS_ENDPOINT_URL) and region if the bucket is not on AWS."
        )
    if code in _S3_MISSING_KEY_CODES:
        return MissingLocationError(
            f"The S3 object {location} was not found (needed to {action} it); check the key, "
            f"or upload the object first."
        )
    return StorageError(
        f"S3 failed to {action} {location} (HTTP {s3_status(err)}, {code}: {message}); retry later, "
        f"or check the store's status if the error persists."
    )


def gcs_storage_error(err: Exception, location: Location, action: str) -> StorageError:
    """Translate a google-cloud-storage exception raised while doing ``action`` on ``location``."""
    if isinstance(err, (google.auth.exceptions.DefaultCredentialsError, google.auth.exceptions.RefreshError)):
        return CredentialsError(f"No usable GCS credentials to {action} {location} ({err}); {GCS_CREDENTIAL_SOURCES}.")
    if isinstance(err, (google.api_core.exceptions.Forbidden, google.api_core.exceptions.Unauthorized)):
        return CredentialsError(
            f"GCS rejected the request to {action} {location} (HTTP {err.code}: {err.message}); check that the "
            f"credentials are valid and allowed to access bucket {location.bucket!r}. {GCS_CREDENTIAL_SOURCES}."
        )
    if isinstance(err, google.api_core.exceptions.NotFound):
        return MissingLocationError(
            f"The GCS object {location} was not found (needed to {action} it); check the bucket and "
            f"object name, or upload the object first."
        )
    if isinstance(err, google.api_core.exceptions.GoogleAPICallError):
        return StorageError(
            f"GCS failed to {action} {location} (HTTP {err.code}: {err.message}); retry later, "
            f"or check the store's status if the error persists."
        )
    if is_gcs_connection_error(err):
        return StorageError(
            f"Could not reach GCS to {action} {location} ({type(err).__name__}: {err}); check the network, "
            f"and STORAGE_EMULATOR_HOST if you use an emulator."
        )
    return StorageError(f"Failed to {action} {location} ({type(err).__name__}: {err}).")


def missing_bucket_error(location: Location, store_name: str) -> StorageError:
    """Return the error for a missing bucket.

    A 404 response to HEAD does not tell whether the bucket or the object is missing, so
    the stores check the bucket and then use this error.
    """
    return MissingLocationError(
        f"The {store_name} bucket {location.bucket!r} does not exist (needed for {location}); check the "
        f"bucket name and the endpoint or project it lives in."
    )
