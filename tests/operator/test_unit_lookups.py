"""The short-lived cache of found ClipClusters, ClipDatasets and Secrets, on an injected clock."""

from __future__ import annotations

import pytest

from kubeclip.operator.resolution import Lookups


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """A load function that counts its calls and returns a new value each time, or raises ``error`` when it is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return f"value-{self.calls}"


def test_found_value_kept_within_ttl() -> None:
    clock, load = Clock(), Loader()
    lookups = Lookups(ttl=15.0, clock=clock)
    assert lookups.get(("clipclusters", "a"), load) == "value-1"
    clock.now += 14.9
    assert lookups.get(("clipclusters", "a"), load) == "value-1"
    assert load.calls == 1


def test_value_read_again_after_ttl() -> None:
    clock, load = Clock(), Loader()
    lookups = Lookups(ttl=15.0, clock=clock)
    lookups.get(("clipclusters", "a"), load)
    clock.now += 15.0
    assert lookups.get(("clipclusters", "a"), load) == "value-2"
    assert load.calls == 2


def test_keys_are_cached_apart() -> None:
    clock, load = Clock(), Loader()
    lookups = Lookups(ttl=15.0, clock=clock)
    assert lookups.get(("secrets", "ns", "a"), load) == "value-1"
    assert lookups.get(("secrets", "ns", "b"), load) == "value-2"
    assert lookups.get(("secrets", "ns", "a"), load) == "value-1"


def test_failure_is_not_cached() -> None:
    clock, load = Clock(), Loader()
    lookups = Lookups(ttl=15.0, clock=clock)
    load.error = LookupError("ClipDataset photos not found")
    with pytest.raises(LookupError, match="photos not found"):
        lookups.get(("clipdatasets", "ns", "photos"), load)
    load.error = None
    assert lookups.get(("clipdatasets", "ns", "photos"), load) == "value-2"
    assert load.calls == 2


def test_zero_ttl_reads_every_time() -> None:
    clock, load = Clock(), Loader()
    lookups = Lookups(ttl=0.0, clock=clock)
    lookups.get(("clipclusters", "a"), load)
    lookups.get(("clipclusters", "a"), load)
    assert load.calls == 2
