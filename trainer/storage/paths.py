"""String helpers for output locations that may be local directories or object-store prefixes."""

from __future__ import annotations

_REMOTE_SCHEMES = ("s3://", "gs://")


def is_local(location: str) -> bool:
    """True for a plain path or ``file://`` URI, False for ``s3://`` and ``gs://`` prefixes."""
    return not location.startswith(_REMOTE_SCHEMES)


def join(location: str, *parts: str) -> str:
    """Append path segments with ``/``, whether ``location`` is a path or a URI."""
    joined = location.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def local_path(location: str):
    """Return the filesystem path of a local location (a plain path or ``file://`` URI), with ``~`` expanded."""
    from pathlib import Path

    return Path(location.removeprefix("file://")).expanduser()
