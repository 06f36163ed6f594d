"""Which transitions of a pass become Kubernetes events, and of which type."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubeclip.api.status import ConditionStatus as Status, ConditionType as Type
from kubeclip.operator.conditions import Transition
from kubeclip.operator.events import EventRecorder

JOB = {"apiVersion": "kubeclip.dev/v1alpha1", "kind": "ClipTrainingJob", "metadata": {"namespace": "team", "name": "photos", "uid": "u-1"}}


class RecordingEvents(EventRecorder):
    """The recorder with ``post`` replaced by a list, so the selection of events is checked without an API server."""

    def __init__(self) -> None:
        super().__init__(client.ApiClient())
        self.posted: list[tuple[str, str, bool]] = []

    def post(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        self.posted.append((reason, message, warning))


def test_one_event_per_reason() -> None:
    events = RecordingEvents()
    events.transitions(JOB, [
        Transition(Type.SUSPENDED, Status.TRUE, "SuspendedByUser", "spec.suspend is true"),
        Transition(Type.RUNNING, Status.FALSE, "SuspendedByUser", "the job is suspended"),
        Transition(Type.SCHEDULED, Status.FALSE, "SuspendedByUser", "the trainer pod was removed"),
    ])  # fmt: skip
    assert events.posted == [("SuspendedByUser", "spec.suspend is true", False)]


def test_problem_reasons_are_warnings() -> None:
    events = RecordingEvents()
    events.transitions(JOB, [
        Transition(Type.SCHEDULED, Status.FALSE, "Unschedulable", "no node"),
        Transition(Type.SCHEDULED, Status.TRUE, "PodScheduled", "on node n"),
    ])  # fmt: skip
    assert [(reason, warning) for reason, _, warning in events.posted] == [("Unschedulable", True), ("PodScheduled", False)]


def test_terminal_condition_going_false_posts_nothing() -> None:
    events = RecordingEvents()
    events.transitions(JOB, [Transition(Type.FAILED, Status.FALSE, "Resumed", "no longer failed")])
    assert events.posted == []


def test_repeated_event_posted_once() -> None:
    events = RecordingEvents()
    retry = Transition(Type.RUNNING, Status.FALSE, "Retrying", "attempt 1 failed")
    events.transitions(JOB, [retry])
    events.transitions(JOB, [retry])
    events.transitions(JOB, [Transition(Type.RUNNING, Status.FALSE, "Retrying", "attempt 2 failed")])
    assert [message for _, message, _ in events.posted] == ["attempt 1 failed", "attempt 2 failed"]


def test_final_reason_posted_once_whatever_message() -> None:
    events = RecordingEvents()
    events.transitions(JOB, [Transition(Type.SUCCEEDED, Status.TRUE, "TrainingCompleted", "the final model is at s3://b/run")])
    events.transitions(JOB, [Transition(Type.RUNNING, Status.FALSE, "TrainingCompleted", "the trainer finished")])
    assert [reason for reason, _, _ in events.posted] == ["TrainingCompleted"]
