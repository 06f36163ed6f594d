"""Conditions as the API conventions define them: transition times, recorded transitions and the phase."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubeclip.api.status import CONDITION_MESSAGE_MAX_LENGTH, ConditionReason as Reason, ConditionStatus as Status, ConditionType as Type, JobPhase
from kubeclip.operator.conditions import Conditions, now_iso

T0 = "2026-12-04T10:00:00Z"
T1 = "2026-12-04T10:05:00Z"


def stored(type_: str, status: str, reason: str, when: str = T0) -> dict[str, object]:
    return {"type": type_, "status": status, "reason": reason, "message": "m", "lastTransitionTime": when, "observedGeneration": 1}


def test_now_iso_is_utc_seconds() -> None:
    moment = datetime(2026, 12, 4, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert now_iso(moment) == "2026-12-04T10:00:00Z"


def test_new_condition_gets_now_and_generation() -> None:
    conditions = Conditions(None, generation=3, now=T1)
    conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, "waiting")
    assert conditions.get(Type.SCHEDULED) == {"type": "Scheduled", "status": "False", "reason": "WaitingForScheduler", "message": "waiting",
                                               "lastTransitionTime": T1, "observedGeneration": 3}  # fmt: skip


def test_transition_time_kept_when_only_reason_changes() -> None:
    conditions = Conditions([stored("Scheduled", "False", "WaitingForScheduler")], generation=2, now=T1)
    conditions.set(Type.SCHEDULED, Status.FALSE, Reason.UNSCHEDULABLE, "no node")
    item = conditions.get(Type.SCHEDULED)
    assert item["lastTransitionTime"] == T0
    assert item["observedGeneration"] == 2
    assert [transition.reason for transition in conditions.transitions] == ["Unschedulable"]


def test_transition_time_moves_when_status_flips() -> None:
    conditions = Conditions([stored("Scheduled", "False", "WaitingForScheduler")], generation=1, now=T1)
    conditions.set(Type.SCHEDULED, Status.TRUE, Reason.POD_SCHEDULED, "on node n")
    assert conditions.get(Type.SCHEDULED)["lastTransitionTime"] == T1


def test_unchanged_condition_records_no_transition() -> None:
    conditions = Conditions([stored("Running", "True", "TrainerRunning")], generation=1, now=T1)
    conditions.set(Type.RUNNING, Status.TRUE, Reason.TRAINER_RUNNING, "a new message with a new step")
    assert conditions.transitions == []
    assert conditions.get(Type.RUNNING)["message"] == "a new message with a new step"


def test_transition_recorded_once_per_type() -> None:
    conditions = Conditions(None, generation=1, now=T1)
    conditions.set(Type.SCHEDULED, Status.FALSE, Reason.WAITING_FOR_SCHEDULER, "first")
    conditions.set(Type.RUNNING, Status.FALSE, Reason.TRAINER_STARTING, "starting")
    conditions.set(Type.SCHEDULED, Status.TRUE, Reason.POD_SCHEDULED, "second")
    assert [(transition.type, transition.reason) for transition in conditions.transitions] == [
        (Type.SCHEDULED, "PodScheduled"),
        (Type.RUNNING, "TrainerStarting"),
    ]
    assert conditions.transitions[0].message == "second"


def test_set_back_to_start_records_nothing() -> None:
    conditions = Conditions([stored("Running", "True", "TrainerRunning")], generation=1, now=T1)
    conditions.set(Type.RUNNING, Status.FALSE, Reason.RETRYING, "attempt failed")
    conditions.set(Type.RUNNING, Status.TRUE, Reason.TRAINER_RUNNING, "training again")
    assert conditions.transitions == []
    assert conditions.get(Type.RUNNING)["lastTransitionTime"] == T0


def test_set_named_reports_change_without_transition() -> None:
    conditions = Conditions([stored("Reachable", "True", "Connected")], generation=1, now=T1)
    assert conditions.set_named("Reachable", Status.TRUE, "Connected", "still there") is False
    assert conditions.set_named("Reachable", Status.FALSE, "ClusterUnreachable", "gone") is True
    assert conditions.transitions == []


def test_clear_leaves_absent_condition_absent() -> None:
    conditions = Conditions(None, generation=1, now=T1)
    conditions.clear(Type.SUSPENDED, Reason.RESUMED, "resumed")
    assert conditions.get(Type.SUSPENDED) is None
    assert conditions.transitions == []


def test_clear_sets_existing_condition_false() -> None:
    conditions = Conditions([stored("Suspended", "True", "SuspendedByUser")], generation=1, now=T1)
    conditions.clear(Type.SUSPENDED, Reason.RESUMED, "resumed")
    assert conditions.get(Type.SUSPENDED)["status"] == "False"
    assert [transition.reason for transition in conditions.transitions] == ["Resumed"]


def test_long_message_is_cut_to_schema_limit() -> None:
    conditions = Conditions(None, generation=1, now=T1)
    conditions.set(Type.FAILED, Status.TRUE, Reason.CONFIGURATION_ERROR, "x" * (CONDITION_MESSAGE_MAX_LENGTH + 10))
    assert len(conditions.get(Type.FAILED)["message"]) == CONDITION_MESSAGE_MAX_LENGTH
    assert len(conditions.transitions[0].message) == CONDITION_MESSAGE_MAX_LENGTH


def test_conditions_listed_in_type_order() -> None:
    conditions = Conditions([stored("Reachable", "True", "Connected"), stored("Running", "True", "TrainerRunning")], generation=1, now=T1)
    conditions.set(Type.SCHEDULED, Status.TRUE, Reason.POD_SCHEDULED, "on node")
    assert [item["type"] for item in conditions.to_list()] == ["Scheduled", "Running", "Reachable"]


def test_stored_conditions_are_not_changed() -> None:
    original = [stored("Running", "True", "TrainerRunning")]
    conditions = Conditions(original, generation=1, now=T1)
    conditions.set(Type.RUNNING, Status.FALSE, Reason.RETRYING, "failed")
    assert original[0]["status"] == "True"


def test_phase_prefers_final_states() -> None:
    conditions = Conditions([stored("Running", "True", "TrainerRunning"), stored("Succeeded", "True", "TrainingCompleted")], generation=1, now=T1)
    assert conditions.phase(workload_exists=True) == JobPhase.SUCCEEDED
    conditions = Conditions([stored("Running", "True", "TrainerRunning"), stored("Suspended", "True", "SuspendedByUser")], generation=1, now=T1)
    assert conditions.phase(workload_exists=True) == JobPhase.SUSPENDED


def test_phase_without_true_condition_depends_on_workload() -> None:
    conditions = Conditions([stored("Scheduled", "False", "WaitingForScheduler")], generation=1, now=T1)
    assert conditions.phase(workload_exists=False) == JobPhase.PENDING
    assert conditions.phase(workload_exists=True) == JobPhase.SCHEDULING
