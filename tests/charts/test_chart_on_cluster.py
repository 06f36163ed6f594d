"""The rendered chart and the commands in NOTES.txt against the real API server.

Every object goes through ``kubectl apply --dry-run=server``: schema validation,
admission (Pod Security included) and the CRDs' CEL rules run, and nothing is stored.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.api.cluster import ClipCluster
from kubeclip.api.loading import parse_job
from kubeclip.dev import binaries
from tests.support.controlplane import ControlPlane, create_namespace, wait_for
from tests.support.operator_access import CHART_DIR, apply_manifests, install_chart_crds, remote_target_kubeconfig, render_chart, run_helm

HTTP_FORBIDDEN = 403
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def render_notes(plane: ControlPlane, values: dict[str, Any], *, namespace: str, release: str, directory: Path) -> str:
    """Return NOTES.txt as ``helm install --dry-run=client`` renders it against ``plane``, where nothing is created."""
    values_file = directory / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    arguments = ["install", release, str(CHART_DIR), "--dry-run=client", "--namespace", namespace, "--values", str(values_file)]
    result = run_helm("--kubeconfig", str(plane.kubeconfig), *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


def heredoc_manifest(notes: str) -> dict[str, Any]:
    """Parse the one manifest that NOTES.txt pipes into ``kubectl apply`` through a heredoc."""
    bodies = re.findall(r"cat <<'EOF' \| kubectl apply -f -\n(.*?)\n\s*EOF\n", notes, flags=re.DOTALL)
    assert len(bodies) == 1, notes
    return yaml.safe_load(textwrap.dedent(bodies[0]))


def command_block(notes: str, step: str) -> list[str]:
    """Return the indented shell commands of a numbered step of NOTES.txt, one per line."""
    section = notes.split(f"\n{step}. ", 1)[1]
    section = re.split(r"\n\d\. ", section, maxsplit=1)[0]
    indented = [line.strip() for line in section.splitlines() if line.startswith("  ")]
    return [line for line in indented if line.startswith(("kubectl ", "SERVER=", "TOKEN="))]


def pod_from_template(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": unique("operator-pod"), "namespace": namespace, "labels": template["metadata"]["labels"]}, "spec": copy.deepcopy(template["spec"])}


def dry_run_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]


@pytest.fixture(scope="module")
def crds(cluster: ControlPlane) -> ControlPlane:
    install_chart_crds(cluster)
    return cluster


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = unique("chart")
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def restricted_namespace(cluster: ControlPlane) -> Iterator[str]:
    name = unique("restricted")
    create_namespace(cluster, name, labels=RESTRICTED)
    yield name
    cluster.core.delete_namespace(name)


# Server-side validation of the rendered objects.


@pytest.mark.controlplane
def test_operator_objects_pass_server_dry_run(crds: ControlPlane, namespace: str) -> None:
    manifests = render_chart(namespace=namespace, release=namespace)
    result = apply_manifests(crds, manifests, dry_run=True)
    assert len(dry_run_lines(result)) == len(manifests), result.stdout
    for manifest in manifests:
        assert f"/{manifest['metadata']['name']} serverside-applied (server dry run)" in result.stdout, manifest["kind"]
    assert "Warning" not in result.stderr


@pytest.mark.controlplane
def test_remote_objects_pass_server_dry_run(cluster: ControlPlane, namespace: str) -> None:
    manifests = render_chart({"mode": "remoteTarget", "remoteTarget": {"namespace": namespace}}, namespace=namespace)
    result = apply_manifests(cluster, manifests, dry_run=True)
    assert len(dry_run_lines(result)) == len(manifests), result.stdout
    assert "Warning" not in result.stderr


@pytest.mark.controlplane
def test_operator_pod_admitted_as_restricted(cluster: ControlPlane, restricted_namespace: str) -> None:
    manifests = render_chart(namespace=restricted_namespace, release=restricted_namespace)
    deployment = next(manifest for manifest in manifests if manifest["kind"] == "Deployment")
    account = next(manifest for manifest in manifests if manifest["kind"] == "ServiceAccount")
    # The ServiceAccount admission plugin rejects a pod whose ServiceAccount does not exist.
    apply_manifests(cluster, [account])

    # Pod Security only warns about a Deployment, and enforces its rules on the pod.
    result = apply_manifests(cluster, [deployment], dry_run=True)
    assert "violate PodSecurity" not in result.stderr
    cluster.core.create_namespaced_pod(restricted_namespace, pod_from_template(deployment, restricted_namespace), dry_run="All")


@pytest.mark.controlplane
def test_restricted_namespace_rejects_weaker_pod(cluster: ControlPlane, restricted_namespace: str) -> None:
    """The check above can fail: the same pod without its container securityContext is rejected."""
    manifests = render_chart(namespace=restricted_namespace, release=restricted_namespace)
    deployment = next(manifest for manifest in manifests if manifest["kind"] == "Deployment")
    apply_manifests(cluster, [next(manifest for manifest in manifests if manifest["kind"] == "ServiceAccount")])
    pod = pod_from_template(deployment, restricted_namespace)
    del pod["spec"]["containers"][0]["securityContext"]
    with pytest.raises(ApiException) as caught:
        cluster.core.create_namespaced_pod(restricted_namespace, pod, dry_run="All")
    assert caught.value.status == HTTP_FORBIDDEN
    message = json.loads(caught.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "allowPrivilegeEscalation != false" in message


# NOTES.txt.


@pytest.mark.controlplane
def test_notes_first_job_accepted(crds: ControlPlane, namespace: str, tmp_path: Path) -> None:
    # A unique release without the Managed ClipCluster, because helm's dry run refuses
    # objects that other tests of the session created outside a release.
    values = {"managedCluster": {"enabled": False}}
    notes = render_notes(crds, values, namespace=namespace, release=unique("notes"), directory=tmp_path)
    job = heredoc_manifest(notes)
    parse_job(job)
    job["metadata"]["namespace"] = namespace
    objects = client.CustomObjectsApi(crds.api_client)
    created = objects.create_namespaced_custom_object("kubeclip.dev", "v1alpha1", namespace, "cliptrainingjobs", job, dry_run="All")
    assert created["spec"]["infrastructure"]["gpuType"] == "L40"


@pytest.mark.controlplane
def test_notes_remote_cluster_accepted(crds: ControlPlane, tmp_path: Path) -> None:
    values = {"mode": "remoteTarget", "remoteTarget": {"namespace": unique("notes"), "createNamespace": False}}
    notes = render_notes(crds, values, namespace="default", release=unique("gpu-cluster"), directory=tmp_path)
    manifest = heredoc_manifest(notes)
    cluster = ClipCluster.model_validate(manifest)
    reference = cluster.spec.kubeconfig_secret_ref
    assert reference is not None
    assert f"create secret generic {reference.name} --from-file={reference.key}=remote.kubeconfig" in notes
    assert f"kubectl -n {reference.namespace} create secret generic" in notes
    objects = client.CustomObjectsApi(crds.api_client)
    objects.create_cluster_custom_object("kubeclip.dev", "v1alpha1", "clipclusters", manifest, dry_run="All")


@pytest.mark.controlplane
def test_notes_build_working_kubeconfig(second_cluster: ControlPlane, tmp_path: Path) -> None:
    namespace = unique("byo")
    # helm's dry run refuses objects that exist outside a release, so the notes come first.
    values = {"mode": "remoteTarget", "remoteTarget": {"namespace": namespace}}
    notes = render_notes(second_cluster, values, namespace="default", release="byo", directory=tmp_path)
    remote_target_kubeconfig(second_cluster, tmp_path, namespace=namespace)
    secret_name = "kubeclip-operator-remote-token"

    def token_written() -> bool:
        return "token" in (second_cluster.core.read_namespaced_secret(secret_name, namespace).data or {})

    wait_for(token_written, f"the token controller fills Secret {namespace}/{secret_name}")

    # Run step 1 as printed, with kubectl pointed at the BringYourOwn cluster.
    script = "set -euo pipefail\n" + "\n".join(command_block(notes, "1"))
    environment = {**os.environ, "KUBECONFIG": str(second_cluster.kubeconfig), "PATH": f"{binaries.binary_path('kubectl').parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "yes"

    # The kubeconfig it built reaches nothing outside the target namespace.
    denied = subprocess.run(
        ["kubectl", "--kubeconfig=remote.kubeconfig", "auth", "can-i", "create", "jobs.batch", "--namespace=default"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert denied.stdout.strip() == "no"
