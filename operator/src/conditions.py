"""Conditions as the Kubernetes API conventions define them, kept as JSON dicts.

``set_condition`` changes a condition's lastTransitionTime only when its status changes,
and reports whether the status or the reason changed, which is when the operator posts
an event.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubeclip.api.status import CONDITION_MESSAGE_MAX_LENGTH, ConditionReason, ConditionStatus, ConditionType, JobPhase


def now_iso(moment: datetime | None = None) -> str:
    """RFC 3339 UTC time with seconds precision, as metav1.Time serializes."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Transition:
    """A condition whose status or reason changed in this pass."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


class Conditions:
    """A mutable copy of ``status.conditions`` that records the transitions made to it."""

    def __init__(self, conditions: list[dict[str, Any]] | None, *, generation: int, now: str) -> None:
        self._items = {item["type"]: copy.deepcopy(item) for item in conditions or []}
        self._generation = generation
        self._now = now
        self.transitions: list[Transition] = []
        self._last: str | None = None

    def set(self, type_: ConditionType, status: ConditionStatus, reason: ConditionReason | str, message: str) -> None:
        self.set_named(type_.value, status, reason, message)
        if self._last is not None:
            self.transitions.append(Transition(type_, status, self._last, message[:CONDITION_MESSAGE_MAX_LENGTH]))

    def set_named(self, type_name: str, status: ConditionStatus, reason: ConditionReason | str, message: str) -> None:
        """Set a condition of any type, such as a ClipCluster's Reachable."""
        reason = reason.value if isinstance(reason, ConditionReason) else reason
        message = message[:CONDITION_MESSAGE_MAX_LENGTH]
        current = self._items.get(type_name)
        changed_status = current is None or current["status"] != status.value
        self._last = reason if changed_status or current["reason"] != reason else None
        self._items[type_name] = {
            "type": type_name,
            "status": status.value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": self._now if changed_status else current["lastTransitionTime"],
            "observedGeneration": self._generation,
        }

    def clear(self, type_: ConditionType, reason: ConditionReason, message: str) -> None:
        """Set a condition to False if it exists; leave it absent otherwise."""
        if type_.value in self._items:
            self.set(type_, ConditionStatus.FALSE, reason, message)

    def is_true(self, type_: ConditionType) -> bool:
        item = self._items.get(type_.value)
        return item is not None and item["status"] == ConditionStatus.TRUE.value

    def get(self, type_: ConditionType) -> dict[str, Any] | None:
        return self._items.get(type_.value)

    def to_list(self) -> list[dict[str, Any]]:
        order = [member.value for member in ConditionType]
        return sorted(self._items.values(), key=lambda item: order.index(item["type"]) if item["type"] in order else len(order))

    def phase(self, workload_exists: bool) -> JobPhase:
        """Summarize the conditions in one word, the most final state first."""
        if self.is_true(ConditionType.SUCCEEDED):
            return JobPhase.SUCCEEDED
        if self.is_true(ConditionType.FAILED):
            return JobPhase.FAILED
        if self.is_true(ConditionType.SUSPENDED):
            return JobPhase.SUSPENDED
        if self.is_true(ConditionType.RUNNING):
            return JobPhase.RUNNING
        return JobPhase.SCHEDULING if workload_exists else JobPhase.PENDING
