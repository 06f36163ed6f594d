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
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the first list has filled the cache; False after ``timeout`` seconds."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get((namespace, name))

    def select(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            return [item for item in self._items.values() if predicate(item)]

    def remember(self, item: dict[str, Any]) -> None:
        """Put an object the operator itself just created or changed into the cache before its watch event arrives."""
        with self._lock:
            self._store(item)

    def forget(self, namespace: str, name: str) -> None:
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
                    resource_version = None
                    continue
                if error.status == 401 and self._on_unauthorized is not None:
                    self._on_unauthorized()
                logger.warning("watch of %s failed: %s %s; retrying in %.1f s", self.name, error.status, error.reason, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            except Exception as error:  # noqa: BLE001 - connection errors of urllib3 have many types
                logger.warning("watch of %s failed: %s; retrying in %.1f s", self.name, error, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _relist(self) -> str:
        response = self._list(label_selector=self._selector, _preload_content=False, _request_timeout=60, **self._arguments)
        listing = json.loads(response.data)
        fresh = {_key(item): item for item in listing.get("items", [])}
        with self._lock:
            gone = [self._items[key] for key in self._items.keys() - fresh.keys()]
            changed = [item for key, item in fresh.items() if _version(self._items.get(key)) != _version(item)]
            self._items = fresh
        self._synced.set()
        for item in [*gone, *changed]:
            self._notify(item)
        return listing["metadata"]["resourceVersion"]

    def _watch_from(self, resource_version: str) -> str:
        self._watch = watch.Watch()
        stream = self._watch.stream(
            self._list,
            label_selector=self._selector,
            resource_version=resource_version,
            timeout_seconds=self._timeout,
            allow_watch_bookmarks=True,
            _request_timeout=(10, self._timeout + 15),
            **self._arguments,
        )
        for event in stream:
            if self._stopping.is_set():
                break
            item = event["raw_object"]
            if event["type"] == "ERROR":
                raise ApiException(status=item.get("code", 500), reason=item.get("message", "watch error"))
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
        key = _key(item)
        current = self._items.get(key)
        if current is not None and _newer(current, item):
            return
        self._items[key] = item

    def _notify(self, item: dict[str, Any]) -> None:
        try:
            self._on_change(item)
        except Exception:  # noqa: BLE001 - a failing callback must not end the watch
            logger.exception("change handler of %s failed", self.name)


def _key(item: dict[str, Any]) -> Key:
    metadata = item.get("metadata", {})
    return metadata.get("namespace", ""), metadata.get("name", "")


def _version(item: dict[str, Any] | None) -> str | None:
    return None if item is None else item.get("metadata", {}).get("resourceVersion")


def _newer(current: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Whether the cached object is newer than ``candidate``; resourceVersions are integers in etcd-backed servers."""
    try:
        return int(_version(current) or 0) > int(_version(candidate) or 0)
    except ValueError:
        return False
