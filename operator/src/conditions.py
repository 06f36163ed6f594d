"""Conditions as the Kubernetes API conventions define them, kept as JSON dicts.

``Conditions.set`` changes a condition's lastTransitionTime only when its status changes.
It records a transition when a condition's status or reason differs from the one it had
at the start of the pass, which is when the operator posts an event and logs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubeclip.api.status import CONDITION_MESSAGE_MAX_LENGTH, ConditionReason, ConditionStatus, ConditionType, JobPhase


def now_iso(moment: datetime | None = None) -> str:
    """Format ``moment`` (default: now) as RFC 3339 UTC with seconds precision, as metav1.Time serializes."""
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
    """A mutable copy of ``status.conditions`` that records the transitions made to it.

    Args:
        conditions: ``status.conditions`` as stored, or None for a new job.
        generation: metadata.generation that every condition set here reports as observedGeneration.
        now: lastTransitionTime for the conditions whose status changes.
    """

    def __init__(self, conditions: list[dict[str, Any]] | None, *, generation: int, now: str) -> None:
        self._items = {item["type"]: copy.deepcopy(item) for item in conditions or []}
        # The conditions as the pass found them: transitions and transition times are measured against these.
        self._initial = copy.deepcopy(self._items)
        self._generation = generation
        self._now = now
        self._transitions: dict[ConditionType, Transition] = {}

    @property
    def transitions(self) -> list[Transition]:
        """Transitions of this pass, at most one per condition type, in the order the types first changed."""
        return list(self._transitions.values())

    def set(self, type_: ConditionType, status: ConditionStatus, reason: ConditionReason | str, message: str) -> None:
        """Set a job condition and record the transition when it differs from the start of the pass."""
        self.set_named(type_.value, status, reason, message)
        item = self._items[type_.value]
        initial = self._initial.get(type_.value)
        if initial is not None and (initial.get("status"), initial.get("reason")) == (item["status"], item["reason"]):
            # Set back to where the pass started: nothing happened that an event should report.
            self._transitions.pop(type_, None)
        else:
            self._transitions[type_] = Transition(type_, status, item["reason"], item["message"])

    def set_named(self, type_name: str, status: ConditionStatus, reason: ConditionReason | str, message: str) -> bool:
        """Set a condition of any type, such as a ClipCluster's Reachable, without recording a transition.

        Returns:
            Whether the condition's status or reason changed with this call.
        """
        reason = reason.value if isinstance(reason, ConditionReason) else reason
        current = self._items.get(type_name)
        self._items[type_name] = {
            "type": type_name,
            "status": status.value,
            "reason": reason,
            "message": message[:CONDITION_MESSAGE_MAX_LENGTH],
            "lastTransitionTime": self._transition_time(type_name, status),
            "observedGeneration": self._generation,
        }
        return current is None or (current.get("status"), current.get("reason")) != (status.value, reason)

    def _transition_time(self, type_name: str, status: ConditionStatus) -> str:
        """Return the stored lastTransitionTime when the pass started with ``status``, else the pass's own time."""
        initial = self._initial.get(type_name)
        if initial is not None and initial.get("status") == status.value and initial.get("lastTransitionTime"):
            return initial["lastTransitionTime"]
        return self._now

    def clear(self, type_: ConditionType, reason: ConditionReason, message: str) -> None:
        """Set a condition to False if it exists; leave it absent otherwise."""
        if type_.value in self._items:
            self.set(type_, ConditionStatus.FALSE, reason, message)

    def is_true(self, type_: ConditionType) -> bool:
        """Tell whether the condition exists and its status is True."""
        item = self._items.get(type_.value)
        return item is not None and item["status"] == ConditionStatus.TRUE.value

    def get(self, type_: ConditionType) -> dict[str, Any] | None:
        """Return the condition of ``type_``, or None when the job has none."""
        return self._items.get(type_.value)

    def to_list(self) -> list[dict[str, Any]]:
        """Return the conditions in the order of ``ConditionType``; other types follow."""
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
