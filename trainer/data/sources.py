"""The one place that turns a dataset location into a local ZIP path.

Called by the training run and by ``kubeclip dataset validate``. A new kind of
source adds a branch here and nowhere else.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from kubeclip.trainer.config import DataConfig

logger = logging.getLogger(__name__)

BUILTIN_SCHEME = "builtin://"


def fetch_dataset(data: DataConfig, cache_dir: Path) -> Path:
    """Return a local path to the dataset ZIP, downloading or building it into ``cache_dir`` if needed.

    Raises:
        ConfigError: unknown built-in dataset or malformed location.
        StorageError / CredentialsError: the download failed.
    """
    if data.source.startswith(BUILTIN_SCHEME):
        from kubeclip.trainer.data.builtin import materialize_builtin_dataset

        return materialize_builtin_dataset(data.source.removeprefix(BUILTIN_SCHEME), cache_dir / "datasets")

    from kubeclip.trainer.storage.download import download_file
    from kubeclip.trainer.storage.uri import parse_location

    location = parse_location(data.source, require_key=True)
    if location.is_local:
        return download_file(data.source, Path(location.key))
    digest = hashlib.sha256(data.source.encode()).hexdigest()[:16]
    destination = cache_dir / "datasets" / f"{digest}-{location.name}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading dataset", extra={"source": str(location), "destination": str(destination)})
    return download_file(data.source, destination, region=data.region, profile=data.profile, progress=_DownloadProgress())


class _DownloadProgress:
    """Logs download progress at most every 10% so large files do not flood the log."""

    def __init__(self) -> None:
        self._next_percent = 10

    def __call__(self, done: int, total: int | None) -> None:
        if not total:
            return
        percent = 100 * done // total
        if percent >= self._next_percent:
            logger.info("download progress", extra={"bytes": done, "total_bytes": total, "percent": percent})
            self._next_percent = percent - percent % 10 + 10
