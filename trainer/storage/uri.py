"""Parse storage location strings (local paths, ``file://``, ``s3://``, ``gs://``, ``http(s)://``).

Called by every other module of ``kubeclip.trainer.storage``. Config validation can call
``parse_location`` too, so a malformed location fails with a ConfigError before any
download starts.
"""

from __future__ import annotations

import os
import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from kubeclip.trainer.errors import ConfigError

ACCEPTED_FORMS = (
    "a local path, file:///absolute/path, s3://bucket/key, gs://bucket/object, "
    "http://host/path or https://host/path"
)

OBJECT_STORE_SCHEMES = ("s3", "gs")
HTTP_SCHEMES = ("http", "https")

# The characters that both S3 (including legacy us-east-1 names with capitals and
# underscores) and GCS accept in a bucket name. The stores enforce the exact rules.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,220}[A-Za-z0-9]")
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Location:
    """A parsed storage location.

    ``key`` is the object key or prefix for ``s3`` and ``gs`` (no leading slash, may be
    empty for the bucket root), the local path for ``file``, and everything after
    ``scheme://`` for ``http`` and ``https``.
    """

    scheme: str
    bucket: str | None
    key: str

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def is_http(self) -> bool:
        return self.scheme in HTTP_SCHEMES

    @property
    def url(self) -> str:
        """The full location, including any user name, password or query string of an HTTP URL."""
        if self.scheme == "file":
            return self.key
        if self.bucket is None:
            return f"{self.scheme}://{self.key}"
        if not self.key:
            return f"{self.scheme}://{self.bucket}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The last path segment, such as ``checkpoint-100`` or ``dataset.zip``."""
        if self.scheme == "file":
            return os.path.basename(os.path.normpath(self.key))
        return posixpath.basename(self.key.rstrip("/"))

    @property
    def directory_prefix(self) -> str:
        """The object key prefix of everything below this location: the key plus a ``/`` unless empty."""
        stripped = self.key.strip("/")
        return f"{stripped}/" if stripped else ""

    def child(self, name: str) -> Location:
        """Return the location of ``name`` below this one. ``name`` may contain ``/``-separated segments."""
        _check_child_name(name, self)
        if self.scheme == "file":
            return Location("file", None, os.path.join(self.key, *name.split("/")))
        if self.is_http:
            base = urllib.parse.urlsplit(self.url)
            joined = base._replace(path=base.path.rstrip("/") + "/" + urllib.parse.quote(name))
            return Location(self.scheme, None, urllib.parse.urlunsplit(joined).split("://", 1)[1])
        return Location(self.scheme, self.bucket, self.directory_prefix + name)

    def __str__(self) -> str:
        # HTTP URLs can carry a password or a signed query string (presigned S3 or GCS
        # URLs). Messages and logs show str(), so it hides both.
        if self.is_http:
            return _redact_url(self.url)
        return self.url


def parse_location(text: str, *, require_key: bool = False) -> Location:
    """Parse a location string and raise ConfigError naming the value if it is malformed.

    With ``require_key`` an ``s3://`` or ``gs://`` location must name an object, not only
    a bucket, which is what a file download needs.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Storage location {text!r} is empty; expected {ACCEPTED_FORMS}.")
    match = _URI_SCHEME.match(text)
    if match is None:
        return Location("file", None, text)

    scheme = match.group(1).lower()
    remainder = text[match.end():]
    if scheme == "file":
        return _parse_file_uri(text)
    if scheme in OBJECT_STORE_SCHEMES:
        return _parse_object_store_uri(text, scheme, remainder, require_key=require_key)
    if scheme in HTTP_SCHEMES:
        return _parse_http_url(text, scheme, remainder)
    raise ConfigError(
        f"Storage location {_redact_url(text)!r} has the unsupported scheme {scheme!r}; expected {ACCEPTED_FORMS}."
    )


def _parse_file_uri(text: str) -> Location:
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"Storage location {text!r} names the host {parts.netloc!r}, but file:// URIs can only name "
            f"local files; write file:///absolute/path (three slashes) or a plain path."
        )
    path = urllib.parse.unquote(parts.path)
    if not path:
        raise ConfigError(f"Storage location {text!r} has no path; write file:///absolute/path or a plain path.")
    return Location("file", None, path)


def _parse_object_store_uri(text: str, scheme: str, remainder: str, *, require_key: bool) -> Location:
    # Split by hand instead of with urlsplit, because S3 and GCS keys may contain
    # '?' and '#', which urlsplit would cut off as a query or a fragment.
    bucket, _, key = remainder.partition("/")
    if not bucket:
        raise ConfigError(f"Storage location {text!r} has an empty bucket name; write {scheme}://bucket/key.")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise ConfigError(
            f"Storage location {text!r} has the invalid bucket name {bucket!r}; a bucket name has 3 to 222 "
            f"letters, digits, dots, hyphens or underscores and starts and ends with a letter or digit."
        )
    key = key.lstrip("/")
    if require_key and (not key or key.endswith("/")):
        raise ConfigError(
            f"Storage location {text!r} names no object, but a file download needs one; "
            f"write {scheme}://{bucket}/path/to/file."
        )
    return Location(scheme, bucket, key)


def _parse_http_url(text: str, scheme: str, remainder: str) -> Location:
    parts = urllib.parse.urlsplit(text)
    if not parts.hostname:
        raise ConfigError(f"Storage location {_redact_url(text)!r} has no host name; write {scheme}://host/path.")
    try:
        parts.port
    except ValueError as err:
        raise ConfigError(
            f"Storage location {_redact_url(text)!r} has an invalid port; write {scheme}://host:port/path "
            f"with a port from 1 to 65535."
        ) from err
    return Location(scheme, None, remainder)


def _check_child_name(name: str, parent: Location) -> None:
    segments = name.split("/")
    if not name or name.startswith("/") or any(segment in ("", ".", "..") for segment in segments):
        raise ConfigError(
            f"Child name {name!r} below {parent} is invalid; use a relative name such as 'checkpoint-100' "
            f"or 'model/weights.safetensors', without empty, '.' or '..' segments."
        )


def _redact_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    # Keep host and port as written and drop only the user name and password.
    netloc = parts.netloc.rpartition("@")[2]
    query = "<redacted>" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
