"""Errors the trainer raises on purpose, and the process exit codes they map to.

The exit code tells the process that restarts the trainer (the operator, a Job's pod failure
policy, a shell script) whether a retry can help: a configuration or data error
fails the same way every time, a transient storage failure or an interruption does
not.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of ``kubeclip train`` and the trainer entry point."""

    SUCCEEDED = 0
    #: An unexpected error; a retry from the newest checkpoint may help.
    FAILED = 1
    #: The job's settings are invalid; a retry fails the same way until they change.
    INVALID_CONFIG = 2
    #: The dataset is invalid; a retry fails the same way until the data changes.
    INVALID_DATASET = 3
    #: Reading or writing the dataset, model or output location failed.
    STORAGE_FAILED = 4
    #: SIGTERM or SIGINT arrived; a checkpoint was written and a new run resumes from it.
    #: 75 is EX_TEMPFAIL from sysexits.h: "try again later".
    INTERRUPTED = 75


class TrainerError(Exception):
    """Base class of errors whose message is meant for the user as it is."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(TrainerError):
    """A setting is invalid or unsupported; the message names the setting and the fix."""

    exit_code = ExitCode.INVALID_CONFIG


class DatasetError(TrainerError):
    """The dataset archive is invalid; the message names the member or JSONL line and the fix."""

    exit_code = ExitCode.INVALID_DATASET


class StorageError(TrainerError):
    """Reading from or writing to a local path, S3, GCS or HTTP(S) location failed."""

    exit_code = ExitCode.STORAGE_FAILED


class MissingLocationError(StorageError):
    """A file, object or bucket that the job names does not exist.

    A retry finds it missing again until the job or the store changes, so it exits like
    an invalid setting and a Job's pod failure policy fails at once instead of retrying.
    """

    exit_code = ExitCode.INVALID_CONFIG


class CredentialsError(StorageError):
    """Credentials for an object store are missing or rejected; the message names where they are read from."""


class TrainingInterrupted(TrainerError):
    """A stop signal arrived; the newest state is saved in a checkpoint."""

    exit_code = ExitCode.INTERRUPTED
