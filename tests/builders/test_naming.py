"""Workload names and labels: valid for Kubernetes, stable, and distinct per job."""

from __future__ import annotations

import hashlib
import re

import pytest

from kubeclip.builders.naming import (
    CLEANUP_FINALIZER,
    JOB_NAME_LABEL,
    JOB_NAMESPACE_LABEL,
    JOB_UID_LABEL,
    TRAINER_SELECTOR,
    config_configmap_name,
    dataset_secret_copy_name,
    label_value,
    output_secret_copy_name,
    progress_configmap_name,
    workload_labels,
    workload_name,
)

# The patterns of k8s.io/apimachinery/pkg/util/validation, written out here so the
# tests do not reuse the code under test.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

NAMES = [
    "flowers",
    "a",
    "x" * 63,
    "run-2026-12-04-" + "a" * 40,
    "ends-with-dash-at-40-characters--------x-and-more",
    "dotted.name.of.a.dns.subdomain",
    "y" * 253,
]


def _is_dns_label(text: str) -> bool:
    return bool(DNS_LABEL.match(text)) and len(text) <= 63


def _is_label_value(text: str) -> bool:
    return bool(LABEL_VALUE.match(text)) and len(text) <= 63


@pytest.mark.parametrize("name", NAMES)
def test_workload_name_is_dns_label(name: str) -> None:
    workload = workload_name("team-a", name)

    assert _is_dns_label(workload), workload
    assert _is_dns_label(progress_configmap_name(workload))
    assert _is_dns_label(config_configmap_name(workload))
    assert _is_dns_label(dataset_secret_copy_name(workload))
    assert _is_dns_label(output_secret_copy_name(workload))
    # The Job controller names pods WORKLOAD-xxxxx.
    assert len(workload) + 6 <= 63


def test_workload_name_is_prefix_and_hash() -> None:
    expected_hash = hashlib.sha256(b"team-a/flowers").hexdigest()[:8]

    assert workload_name("team-a", "flowers") == f"flowers-{expected_hash}"


def test_workload_name_cuts_name_to_40_characters() -> None:
    name = "abcdefghij" * 5

    workload = workload_name("team-a", name)

    assert workload.startswith(name[:40] + "-")
    assert len(workload) == 49


def test_workload_name_is_stable() -> None:
    assert workload_name("team-a", "flowers") == workload_name("team-a", "flowers")


def test_workload_name_differs_per_namespace_and_long_name() -> None:
    common = "p" * 45

    names = {
        workload_name("team-a", "flowers"),
        workload_name("team-b", "flowers"),
        workload_name("team-a", common + "-one"),
        workload_name("team-a", common + "-two"),
    }

    assert len(names) == 4


def test_workload_name_rejects_empty_name() -> None:
    with pytest.raises(ValueError, match="needs the job's namespace and name"):
        workload_name("team-a", "")


def test_configmap_names_follow_design() -> None:
    assert progress_configmap_name("flowers-1234abcd") == "flowers-1234abcd-progress"
    assert config_configmap_name("flowers-1234abcd") == "flowers-1234abcd-config"
    assert dataset_secret_copy_name("flowers-1234abcd") == "flowers-1234abcd-dataset"
    assert output_secret_copy_name("flowers-1234abcd") == "flowers-1234abcd-output"


def test_workload_labels_are_the_six_of_the_design() -> None:
    labels = workload_labels("team-a", "flowers", "uid-1", "flowers-1234abcd")

    assert labels == {
        "app.kubernetes.io/name": "kubeclip-trainer",
        "app.kubernetes.io/managed-by": "kubeclip-operator",
        "app.kubernetes.io/instance": "flowers-1234abcd",
        "kubeclip.dev/job-namespace": "team-a",
        "kubeclip.dev/job-name": "flowers",
        "kubeclip.dev/job-uid": "uid-1",
    }


@pytest.mark.parametrize("name", NAMES)
def test_workload_labels_are_valid_label_values(name: str) -> None:
    labels = workload_labels("team-a", name, "0f6c1e8e-5b7a-4c55-9d0e-6a1f2b3c4d5e", workload_name("team-a", name))

    invalid = {key: value for key, value in labels.items() if not _is_label_value(value)}
    assert invalid == {}
    assert name.startswith(labels[JOB_NAME_LABEL])


def test_label_value_cuts_and_trims_edges() -> None:
    assert label_value("a" * 62 + "-b") == "a" * 62
    assert label_value("-x.y_z-") == "x.y_z"
    assert label_value("with space/slash") == "with-space-slash"
    assert label_value("") == ""


def test_selector_and_constants_match_labels() -> None:
    labels = workload_labels("team-a", "flowers", "uid-1", "w")
    selector = dict(term.split("=") for term in TRAINER_SELECTOR.split(","))

    assert selector == {"app.kubernetes.io/name": "kubeclip-trainer", "app.kubernetes.io/managed-by": "kubeclip-operator"}
    assert all(labels[key] == value for key, value in selector.items())
    assert labels[JOB_UID_LABEL] == "uid-1"
    assert labels[JOB_NAMESPACE_LABEL] == "team-a"
    assert CLEANUP_FINALIZER == "kubeclip.dev/cleanup"
