"""Which status a pass builds on: the job body's, or the operator's own newer write that the body does not show yet."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubeclip.operator.metrics import OperatorMetrics
from kubeclip.operator.reconciler import Reconciler
from kubeclip.operator.settings import OperatorSettings

UID = "0b7d2c7e-0000-4000-8000-000000000002"


def body(version: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "team", "name": "photos", "uid": UID, "resourceVersion": version}, "status": {"phase": phase}}


def reconciler_with_write(version: int, status: dict[str, Any]) -> Reconciler:
    # Only the bookkeeping of written statuses is used, so the registry and the event recorder are left out.
    reconciler = Reconciler(client.ApiClient(), OperatorSettings(), registry=None, events=None, metrics=OperatorMetrics())  # type: ignore[arg-type]
    reconciler._written[UID] = (version, status)
    return reconciler


def test_body_without_own_write_is_used() -> None:
    reconciler = Reconciler(client.ApiClient(), OperatorSettings(), registry=None, events=None, metrics=OperatorMetrics())  # type: ignore[arg-type]
    assert reconciler._previous_status(body("5", "Pending")) == {"phase": "Pending"}


def test_older_body_yields_own_write() -> None:
    reconciler = reconciler_with_write(12, {"phase": "Running"})
    assert reconciler._previous_status(body("11", "Scheduling")) == {"phase": "Running"}
    assert reconciler._previous_status(body("11", "Scheduling")) == {"phase": "Running"}


def test_body_of_same_version_replaces_own_write() -> None:
    reconciler = reconciler_with_write(12, {"phase": "Running", "nodeName": "as-written"})
    assert reconciler._previous_status(body("12", "Running")) == {"phase": "Running"}
    assert UID not in reconciler._written


def test_newer_body_replaces_own_write() -> None:
    reconciler = reconciler_with_write(12, {"phase": "Running"})
    assert reconciler._previous_status(body("15", "Succeeded")) == {"phase": "Succeeded"}
    assert reconciler._previous_status(body("11", "Scheduling")) == {"phase": "Scheduling"}


def test_version_that_is_no_integer_trusts_body() -> None:
    reconciler = reconciler_with_write(12, {"phase": "Running"})
    assert reconciler._previous_status(body("opaque", "Pending")) == {"phase": "Pending"}
