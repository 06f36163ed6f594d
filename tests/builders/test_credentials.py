"""Which Secret feeds which environment variables and volumes of the trainer pod."""

from __future__ import annotations

from typing import Any

import pytest

from kubeclip.builders.workload import CredentialConflict, build_trainer_job, build_workload
from tests.builders.factories import make_job, make_request

AWS_VARIABLES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"]


def _pod_spec(request) -> dict[str, Any]:
    return build_trainer_job(request, suspend=False)["spec"]["template"]["spec"]


def _env(request) -> dict[str, dict[str, Any]]:
    entries = _pod_spec(request)["containers"][0]["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate variables in {names}"
    return {entry["name"]: entry for entry in entries}


def _secret_refs(env: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str, bool]]:
    refs = {}
    for name, entry in env.items():
        reference = entry.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None:
            refs[name] = (reference["name"], reference["key"], reference.get("optional", False))
    return refs


def test_shared_s3_secret_gives_one_set() -> None:
    env = _env(make_request())

    assert _secret_refs(env) == {
        "AWS_ACCESS_KEY_ID": ("aws-credentials", "AWS_ACCESS_KEY_ID", False),
        "AWS_SECRET_ACCESS_KEY": ("aws-credentials", "AWS_SECRET_ACCESS_KEY", False),
        "AWS_SESSION_TOKEN": ("aws-credentials", "AWS_SESSION_TOKEN", True),
        "AWS_ENDPOINT_URL": ("aws-credentials", "AWS_ENDPOINT_URL", True),
    }
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env


def test_credential_variables_never_carry_values() -> None:
    job = make_job(output__storageUri="gs://models/flowers", output__secretRef={"name": "gcs-key"})

    env = _env(make_request(job))

    for name in AWS_VARIABLES:
        assert "value" not in env[name], name
        assert set(env[name]["valueFrom"]) == {"secretKeyRef"}, name
    # The only literal credential variable is the path of the mounted key file.
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == {
        "name": "GOOGLE_APPLICATION_CREDENTIALS",
        "value": "/var/run/secrets/kubeclip/gcs/service-account.json",
    }


def test_literal_values_are_paths_and_names_only() -> None:
    job = make_job(output__storageUri="gs://models/flowers", output__secretRef={"name": "gcs-key"})

    env = _env(make_request(job))

    literal = {name for name, entry in env.items() if "value" in entry}
    assert literal == {"HOME", "KUBECLIP_PROGRESS_CONFIGMAP", "KUBECLIP_OUTPUT_LOCATION", "KUBECLIP_CACHE_DIR", "GOOGLE_APPLICATION_CREDENTIALS"}


def test_s3_dataset_and_gcs_output_get_both() -> None:
    job = make_job(output__storageUri="gs://models/flowers", output__secretRef={"name": "gcs-key"})

    spec = _pod_spec(make_request(job))
    env = {entry["name"]: entry for entry in spec["containers"][0]["env"]}

    assert {name for name, (secret, _, _) in _secret_refs(env).items() if secret == "aws-credentials"} == set(AWS_VARIABLES)
    volume = next(volume for volume in spec["volumes"] if volume["name"] == "gcs-credentials")
    assert volume["secret"]["secretName"] == "gcs-key"
    assert volume["secret"]["items"] == [{"key": "service-account.json", "path": "service-account.json"}]
    mount = next(mount for mount in spec["containers"][0]["volumeMounts"] if mount["name"] == "gcs-credentials")
    assert mount == {"name": "gcs-credentials", "mountPath": "/var/run/secrets/kubeclip/gcs", "readOnly": True}


def test_shared_gcs_secret_mounted_once() -> None:
    job = make_job(
        dataset__source={"uri": "gs://datasets/flowers.zip", "secretRef": {"name": "gcs-key"}},
        output__storageUri="gs://models/flowers",
        output__secretRef={"name": "gcs-key"},
    )

    spec = _pod_spec(make_request(job))

    assert [volume["name"] for volume in spec["volumes"]].count("gcs-credentials") == 1
    assert [mount["name"] for mount in spec["containers"][0]["volumeMounts"]].count("gcs-credentials") == 1
    assert _secret_refs(_env(make_request(job))) == {}


def test_different_s3_secrets_conflict() -> None:
    job = make_job(output__secretRef={"name": "output-credentials"})

    with pytest.raises(CredentialConflict, match=r"Secret 'aws-credentials'.*Secret 'output-credentials'.*both locations are on S3.*into one Secret"):
        build_workload(make_request(job))


def test_different_gcs_secrets_conflict() -> None:
    job = make_job(
        dataset__source={"uri": "gs://datasets/flowers.zip", "secretRef": {"name": "reader"}},
        output__storageUri="gs://models/flowers",
        output__secretRef={"name": "writer"},
    )

    with pytest.raises(CredentialConflict, match=r"Secret 'reader'.*Secret 'writer'.*both locations are on GCS.*GOOGLE_APPLICATION_CREDENTIALS"):
        build_workload(make_request(job))


def test_credential_conflict_is_value_error() -> None:
    assert issubclass(CredentialConflict, ValueError)


def test_byo_copies_of_one_secret_do_not_conflict() -> None:
    request = make_request(dataset_secret_name="flowers-1234abcd-dataset", output_secret_name="flowers-1234abcd-output")

    refs = _secret_refs(_env(request))

    assert {secret for secret, _, _ in refs.values()} == {"flowers-1234abcd-dataset"}
    assert set(refs) == set(AWS_VARIABLES)


def test_output_secret_serves_both_when_dataset_has_none() -> None:
    job = make_job(dataset__source={"uri": "s3://public/flowers.zip", "region": "eu-west-1"})

    refs = _secret_refs(_env(make_request(job)))

    assert {secret for secret, _, _ in refs.values()} == {"aws-credentials"}


@pytest.mark.parametrize("uri", ["https://example.com/flowers.zip", "builtin://skimage-photos"])
def test_secret_of_other_location_is_ignored(uri: str) -> None:
    job = make_job(dataset__source={"uri": uri, "secretRef": {"name": "unused"}}, output__secretRef=None)

    env = _env(make_request(job, dataset_secret_name="unused", output_secret_name=None))

    assert _secret_refs(env) == {}


def test_no_secret_gives_no_credential_variables() -> None:
    env = _env(make_request(dataset_secret_name=None, output_secret_name=None))

    assert set(env) == {"HOME", "KUBECLIP_PROGRESS_CONFIGMAP", "KUBECLIP_PROGRESS_NAMESPACE", "KUBECLIP_POD_NAME", "KUBECLIP_OUTPUT_LOCATION", "KUBECLIP_CACHE_DIR"}
