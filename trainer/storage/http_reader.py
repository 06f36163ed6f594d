"""Read ``http://`` and ``https://`` objects in ranges with the standard library's urllib.

Called by ``download.py`` through the ``ObjectReader`` protocol. HTTP locations are
download-only. Messages and logs show URLs without user information or query string,
because either can carry a secret (a password, a presigned URL's signature).
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from kubeclip.trainer.errors import MissingLocationError, StorageError
from kubeclip.trainer.storage.objects import CHUNK_SIZE, ByteSink, ObjectChanged, ObjectInfo, TransferInterrupted
from kubeclip.trainer.storage.uri import Location

TIMEOUT_SECONDS = 60

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Servers that do not implement HEAD respond with one of these.
_HEAD_UNSUPPORTED_STATUSES = frozenset({405, 501})
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


class HTTPReader:
    """Downloads HTTP(S) objects in ranges, using the ETag or Last-Modified header as the version."""

    def stat(self, location: Location) -> ObjectInfo:
        request = _make_request(location, "HEAD")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return _object_info(response.headers)
        except urllib.error.HTTPError as err:
            if err.code in _HEAD_UNSUPPORTED_STATUSES:
                return ObjectInfo(size=None, version=None)
            raise _classify_status(err.code, location) from err
        except _NETWORK_ERRORS as err:
            raise TransferInterrupted(f"HEAD failed: {type(err).__name__}: {err}") from err

    def copy_range(self, location: Location, info: ObjectInfo, start: int, sink: ByteSink) -> None:
        request = _make_request(location, "GET")
        if start > 0:
            request.add_header("Range", f"bytes={start}-")
            # With If-Range the server sends the whole new object (200) instead of a
            # range of it (206) when the version changed.
            if info.version is not None:
                request.add_header("If-Range", info.version)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                _check_range_response(response, start, location)
                _copy_body(response, sink)
        except urllib.error.HTTPError as err:
            raise _classify_status(err.code, location) from err
        except _NETWORK_ERRORS as err:
            raise TransferInterrupted(f"{type(err).__name__}: {err}") from err


def _make_request(location: Location, method: str) -> urllib.request.Request:
    """Build a request for ``location``, sending a user name and password from the URL as Basic auth.

    urllib does not read credentials from a URL, and would report the password as part
    of an invalid port in its error message.
    """
    parts = urllib.parse.urlsplit(location.url)
    netloc = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), method=method)
    if parts.username is not None:
        user_pass = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        # An unredirected header is not copied to the target of a redirect, which may be another host.
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(user_pass.encode()).decode())
    return request


def _object_info(headers: http.client.HTTPMessage) -> ObjectInfo:
    length = headers.get("Content-Length")
    size = int(length) if length is not None and length.isdigit() else None
    return ObjectInfo(size=size, version=_validator(headers))


def _validator(headers: http.client.HTTPMessage) -> str | None:
    """Return a strong ETag, else Last-Modified, else None.

    If-Range accepts only strong validators, so a weak ETag (``W/"..."``) is not used.
    """
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified") or None


def _check_range_response(response: http.client.HTTPResponse, start: int, location: Location) -> None:
    if start == 0:
        return
    if response.status == 200:
        raise ObjectChanged(f"{location} changed, or the server ignored the Range request")
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != start:
        raise ObjectChanged(f"{location} returned an unexpected Content-Range for offset {start}")


def _copy_body(response: http.client.HTTPResponse, sink: ByteSink) -> None:
    while True:
        chunk = response.read(CHUNK_SIZE)
        if not chunk:
            return
        sink(chunk)


def _classify_status(status: int, location: Location) -> Exception:
    if status in _RETRYABLE_STATUSES:
        return TransferInterrupted(f"HTTP {status}")
    if status == 416:
        return ObjectChanged(f"{location} is shorter than the bytes already downloaded")
    if status == 404:
        return MissingLocationError(f"The URL {location} was not found (HTTP 404); check the URL.")
    if status in (401, 403):
        return StorageError(
            f"The server rejected the request for {location} (HTTP {status}); make the object readable without "
            f"credentials, put them in the URL (https://user:password@host/path), or use a presigned URL "
            f"that has not expired."
        )
    return StorageError(f"Downloading {location} failed with HTTP {status}; check the URL and the server.")
