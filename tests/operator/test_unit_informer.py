"""The informer's cache rules: keys, which version is newer, and a relist that keeps the operator's own writes."""

from __future__ import annotations

import json
from typing import Any

from kubeclip.operator.informer import Informer, _key, _newer


def item(name: str, version: str, namespace: str = "jobs") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": version}}


class Response:
    def __init__(self, listing: dict[str, Any]) -> None:
        self.data = json.dumps(listing).encode()


class Lister:
    """A list function that returns the given items at the given resourceVersion, as the API server would."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.version = "0"
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **arguments: Any) -> Response:
        self.calls.append(arguments)
        return Response({"metadata": {"resourceVersion": self.version}, "items": self.items})


def informer(lister: Lister, changes: list[dict[str, Any]]) -> Informer:
    # Never started: the tests call the list step directly, so no thread and no API server are involved.
    return Informer("test/jobs", lister, label_selector="app=x", on_change=changes.append, list_arguments={"namespace": "jobs"})


def test_key_is_namespace_and_name() -> None:
    assert _key(item("w", "1")) == ("jobs", "w")
    assert _key({"metadata": {"name": "node-1"}}) == ("", "node-1")
    assert _key({}) == ("", "")


def test_newer_compares_versions_as_integers() -> None:
    assert _newer(item("w", "10"), item("w", "9"))
    assert not _newer(item("w", "9"), item("w", "10"))
    assert not _newer(item("w", "5"), item("w", "5"))


def test_version_that_is_no_integer_is_never_newer() -> None:
    assert not _newer(item("w", "abc"), item("w", "1"))
    assert not _newer({"metadata": {}}, item("w", "1"))


def test_relist_fills_cache_and_notifies() -> None:
    lister, changes = Lister(), []
    lister.items, lister.version = [item("a", "3"), item("b", "4")], "5"
    cache = informer(lister, changes)
    assert cache._relist() == "5"
    assert cache.synced
    assert cache.get("jobs", "a")["metadata"]["resourceVersion"] == "3"
    assert sorted(change["metadata"]["name"] for change in changes) == ["a", "b"]
    assert lister.calls[0]["label_selector"] == "app=x"
    assert lister.calls[0]["namespace"] == "jobs"


def test_relist_drops_deleted_and_notifies_only_changes() -> None:
    lister, changes = Lister(), []
    lister.items, lister.version = [item("a", "3"), item("b", "4")], "5"
    cache = informer(lister, changes)
    cache._relist()
    changes.clear()
    lister.items, lister.version = [item("a", "3"), item("c", "8")], "9"
    cache._relist()
    assert cache.get("jobs", "b") is None
    assert sorted(change["metadata"]["name"] for change in changes) == ["b", "c"]


def test_relist_keeps_object_remembered_after_list() -> None:
    lister, changes = Lister(), []
    lister.version = "10"
    cache = informer(lister, changes)
    # The operator created this Job after the API server took the list at version 10.
    cache.remember(item("created", "12"))
    cache._relist()
    assert cache.get("jobs", "created")["metadata"]["resourceVersion"] == "12"


def test_relist_keeps_newer_remembered_version() -> None:
    lister, changes = Lister(), []
    lister.items, lister.version = [item("w", "7")], "10"
    cache = informer(lister, changes)
    cache.remember(item("w", "11"))
    cache._relist()
    assert cache.get("jobs", "w")["metadata"]["resourceVersion"] == "11"


def test_relist_drops_object_deleted_before_list() -> None:
    lister, changes = Lister(), []
    lister.version = "20"
    cache = informer(lister, changes)
    cache.remember(item("old", "15"))
    cache._relist()
    assert cache.get("jobs", "old") is None


def test_remember_ignores_older_version() -> None:
    cache = informer(Lister(), [])
    cache.remember(item("w", "8"))
    cache.remember(item("w", "6"))
    assert cache.get("jobs", "w")["metadata"]["resourceVersion"] == "8"
    assert [found["metadata"]["name"] for found in cache.select(lambda found: True)] == ["w"]


def test_failing_callback_does_not_stop_relist() -> None:
    lister = Lister()
    lister.items, lister.version = [item("a", "1"), item("b", "2")], "3"

    def explode(changed: dict[str, Any]) -> None:
        raise RuntimeError(f"handler bug for {changed['metadata']['name']}")

    cache = Informer("test/jobs", lister, label_selector="app=x", on_change=explode)
    assert cache._relist() == "3"
    assert cache.get("jobs", "b") is not None
