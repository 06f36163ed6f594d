"""Operator settings from KUBECLIP_OPERATOR_* variables, and the error for a bad value."""

from __future__ import annotations

import dataclasses

import pytest

from kubeclip.operator.settings import DEFAULT_TRAINER_IMAGE, OperatorSettings, _convert


def test_empty_environment_keeps_defaults() -> None:
    assert OperatorSettings().with_environment({}) == OperatorSettings()


def test_environment_sets_each_type() -> None:
    settings = OperatorSettings().with_environment({
        "KUBECLIP_OPERATOR_NAMESPACES": "team-a, team-b,,",
        "KUBECLIP_OPERATOR_METRICS_PORT": "9090",
        "KUBECLIP_OPERATOR_RESYNC_SECONDS": "2.5",
        "KUBECLIP_OPERATOR_TRAINER_IMAGE": "registry.local/kubeclip:dev",
        "UNRELATED": "x",
    })  # fmt: skip
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.metrics_port == 9090
    assert settings.resync_seconds == 2.5
    assert settings.trainer_image == "registry.local/kubeclip:dev"
    assert settings.health_port == OperatorSettings().health_port


def test_float_field_accepts_integer_text() -> None:
    assert OperatorSettings().with_environment({"KUBECLIP_OPERATOR_CACHE_SYNC_TIMEOUT_SECONDS": "5"}).cache_sync_timeout_seconds == 5.0


def test_bad_integer_names_variable_and_fix() -> None:
    with pytest.raises(ValueError, match=r"KUBECLIP_OPERATOR_WATCH_TIMEOUT_SECONDS='2m' is not an integer; set it to an integer such as 120"):
        OperatorSettings().with_environment({"KUBECLIP_OPERATOR_WATCH_TIMEOUT_SECONDS": "2m"})


def test_bad_float_names_variable_and_fix() -> None:
    with pytest.raises(ValueError, match=r"KUBECLIP_OPERATOR_RESYNC_SECONDS='often' is not a number; set it to a number such as 30.0"):
        OperatorSettings().with_environment({"KUBECLIP_OPERATOR_RESYNC_SECONDS": "often"})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        OperatorSettings().trainer_image = "other"  # type: ignore[misc]
    assert OperatorSettings().trainer_image == DEFAULT_TRAINER_IMAGE


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("Yes", True), ("1", True), ("false", False), ("OFF", False), ("0", False)])
def test_boolean_words(raw: str, expected: bool) -> None:
    assert _convert("leader_election", raw, False) is expected


def test_bad_boolean_names_variable() -> None:
    with pytest.raises(ValueError, match=r"KUBECLIP_OPERATOR_LEADER_ELECTION='maybe' is not a boolean; set it to true or false"):
        _convert("leader_election", "maybe", True)
