"""A watch-backed cache of one kind of object in one cluster, kept by a background thread.

The operator keeps one informer per kind (trainer Jobs, their pods, their progress
ConfigMaps) per target cluster, selected by the trainer label, instead of reading the
API server for every job on every pass. After each change the informer calls
``on_change`` with the object, so the owning job is reconciled at once.

The thread lists, then watches from the list's resourceVersion. A watch that ends (the
server's timeout, an API server restart, a dropped connection) is resumed from the last
resourceVersion seen; a 410 Gone relists. A client-side read timeout a little longer
than the server's bounds how long a silent watch can hang, so a watch that goes quiet
is replaced instead of waited on forever. A 401 calls ``on_unauthorized``, which lets the
owner rebuild the client with fresh credentials.

Reconcile threads read the cache while the informer thread writes it. Every access to
the item map takes ``_lock``, and cached objects are replaced, never changed in place,
so a reader may keep the dict it got.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

Key = tuple[str, str]
#: Seconds to wait after a failed list or watch before the next try, doubled up to the maximum.
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 15.0
#: Seconds a list request may take; a list of trainer objects is small.
LIST_TIMEOUT_SECONDS = 60
#: Seconds to open a watch connection.
CONNECT_TIMEOUT_SECONDS = 10
#: Seconds the client waits beyond the server's watch timeout before it gives up on a silent watch.
READ_TIMEOUT_MARGIN_SECONDS = 15


class Informer:
    """Cache of the objects that ``list_function`` returns for ``label_selector``."""

    def __init__(
        self,
        name: str,
        list_function: Callable[..., Any],
        *,
        label_selector: str,
        on_change: Callable[[dict[str, Any]], None],
        on_unauthorized: Callable[[], None] | None = None,
        watch_timeout_seconds: int = 120,
        list_arguments: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._list = list_function
        self._selector = label_selector
        self._on_change = on_change
        self._on_unauthorized = on_unauthorized
        self._timeout = watch_timeout_seconds
        self._arguments = list_arguments or {}
        self._items: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> Informer:
        """Start the list-and-watch thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end; it ends at the next event or when the watch times out."""
        self._stopping.set()
        current = self._watch
        if current is not None:
            current.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the first list has filled the cache; False after ``timeout`` seconds."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        """Whether the first list has filled the cache."""
        return self._synced.is_set()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Return the cached object, or None when the cache has none of that name."""
        with self._lock:
            return self._items.get((namespace, name))

    def select(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Return the cached objects for which ``predicate`` is true."""
        with self._lock:
            return [item for item in self._items.values() if predicate(item)]

    def remember(self, item: dict[str, Any]) -> None:
        """Put an object the operator itself just created or changed into the cache before its watch event arrives."""
        with self._lock:
            self._store(item)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object from the cache, for one the operator itself just deleted."""
        with self._lock:
            self._items.pop((namespace, name), None)

    def _run(self) -> None:
        delay = RETRY_BASE_SECONDS
        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist()
                resource_version = self._watch_from(resource_version)
                delay = RETRY_BASE_SECONDS
            except ApiException as error:
                if error.status == 410:
                    logger.info("watch of %s expired; listing again", self.name, extra={"informer": self.name, "resource_version": resource_version})
                    resource_version = None
                    continue
                if error.status == 401 and self._on_unauthorized is not None:
                    self._on_unauthorized()
                self._log_retry(f"{error.status} {error.reason}", delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            except Exception as error:  # noqa: BLE001 - connection errors of urllib3 have many types
                self._log_retry(f"{type(error).__name__}: {error}", delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _log_retry(self, error: str, delay: float) -> None:
        # A connection closed by stop() is the expected way out, not a failure.
        if self._stopping.is_set():
            return
        logger.warning("list or watch of %s failed; retrying in %.1f s: %s", self.name, delay, error, extra={"informer": self.name})

    def _relist(self) -> str:
        response = self._list(label_selector=self._selector, _preload_content=False, _request_timeout=LIST_TIMEOUT_SECONDS, **self._arguments)
        listing = json.loads(response.data)
        list_version = listing["metadata"]["resourceVersion"]
        fresh = {_key(item): item for item in listing.get("items", [])}
        with self._lock:
            previous = self._items
            # An object that remember() stored after the list was taken is newer than the list.
            # Dropping it would let the next pass create the object a second time.
            for key, item in previous.items():
                listed = fresh.get(key)
                if _after(item, list_version) and (listed is None or _newer(item, listed)):
                    fresh[key] = item
            deleted = [item for key, item in previous.items() if key not in fresh]
            changed = [item for key, item in fresh.items() if _version(previous.get(key)) != _version(item)]
            self._items = fresh
        self._synced.set()
        for item in [*deleted, *changed]:
            self._notify(item)
        return list_version

    def _watch_from(self, resource_version: str) -> str:
        self._watch = watch.Watch()
        stream = self._watch.stream(
            self._list,
            label_selector=self._selector,
            resource_version=resource_version,
            timeout_seconds=self._timeout,
            allow_watch_bookmarks=True,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, self._timeout + READ_TIMEOUT_MARGIN_SECONDS),
            **self._arguments,
        )
        # The client raises ApiException for ERROR events, a 410 Gone included, because timeout_seconds is set.
        for event in stream:
            if self._stopping.is_set():
                break
            item = event["raw_object"]
            resource_version = item.get("metadata", {}).get("resourceVersion", resource_version)
            if event["type"] == "BOOKMARK":
                continue
            with self._lock:
                if event["type"] == "DELETED":
                    self._items.pop(_key(item), None)
                else:
                    self._store(item)
            self._notify(item)
        return resource_version

    def _store(self, item: dict[str, Any]) -> None:
        """Cache ``item`` unless the cache has a newer version of it; the caller must hold ``_lock``."""
        key = _key(item)
        current = self._items.get(key)
        if current is not None and _newer(current, item):
            return
        self._items[key] = item

    def _notify(self, item: dict[str, Any]) -> None:
        try:
            self._on_change(item)
        except Exception:  # noqa: BLE001 - a failing callback must not end the watch
            namespace, name = _key(item)
            logger.exception("change handler of %s failed for %s/%s", self.name, namespace, name, extra={"informer": self.name})


def _key(item: dict[str, Any]) -> Key:
    metadata = item.get("metadata", {})
    return metadata.get("namespace", ""), metadata.get("name", "")


def _version(item: dict[str, Any] | None) -> str | None:
    return None if item is None else item.get("metadata", {}).get("resourceVersion")


def _newer(current: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Tell whether ``current`` is a newer version of the object than ``candidate``.

    resourceVersions are opaque by the API conventions, but etcd-backed API servers use
    etcd's revision, an integer that grows with every write. A version that is not an
    integer compares as not newer, so the candidate replaces it.
    """
    try:
        return int(_version(current) or 0) > int(_version(candidate) or 0)
    except ValueError:
        return False


def _after(item: dict[str, Any], list_version: str) -> bool:
    """Tell whether ``item`` was written after the list of ``list_version`` was taken."""
    try:
        return int(_version(item) or 0) > int(list_version)
    except ValueError:
        return False
