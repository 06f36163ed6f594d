"""The Helm chart's operator identities, for tests that act as the operator.

The operator's tests call ``operator_kubeconfig`` so that the operator runs with exactly
the RBAC of ``charts/kubeclip`` instead of as the cluster admin: a permission missing
from the ClusterRole then fails a test instead of a user's install.
``remote_target_kubeconfig`` does the same for a BringYourOwn cluster, with the chart's
``mode: remoteTarget``. The chart tests use ``render_chart`` to read what ``helm
template`` produces.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubeclip.dev import binaries, kubeconfig
from tests.support.controlplane import INSTALL_HINT, ControlPlane, kubectl, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "kubeclip"
#: Lifetime of the tokens in the kubeconfigs, longer than any test session.
TOKEN_EXPIRATION_SECONDS = 3600
#: Field manager of the server-side apply, so a second call updates the objects it applied.
FIELD_MANAGER = "kubeclip-tests"
HELM_TIMEOUT_SECONDS = 60
CRD_ESTABLISHED_TIMEOUT_SECONDS = 30.0
OPERATOR_IDENTITY_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


class ChartRenderError(RuntimeError):
    """An error of ``helm template`` about the values or the chart, with helm's output in the message."""


def render_chart(values: dict[str, Any] | None = None, *, namespace: str = "kubeclip-system", release: str = "kubeclip") -> list[dict[str, Any]]:
    """Render ``charts/kubeclip`` with ``helm template`` and return its manifests in helm's install order.

    Args:
        values: values that override the chart's values.yaml, passed as a values file.
        namespace: the release namespace.
        release: the release name.

    Raises:
        ChartRenderError: helm exited with an error, e.g. the values failed values.schema.json.
    """
    return _helm_template(values, namespace=namespace, release=release)


def render_chart_crds() -> list[dict[str, Any]]:
    """Return the CustomResourceDefinitions in the chart's crds/ folder."""
    return [manifest for manifest in _helm_template({}, namespace="default", release="kubeclip", extra=("--include-crds",)) if manifest["kind"] == "CustomResourceDefinition"]


def run_helm(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the helm built with the control plane; fail the test with the install command when it is missing."""
    binary = binaries.binary_path("helm")
    if not binary.is_file():
        pytest.fail(f"helm is not installed at {binary}; {INSTALL_HINT}")
    return subprocess.run([str(binary), *arguments], capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS, check=False)


def operator_kubeconfig(plane: ControlPlane, directory: Path, *, namespace: str = "kubeclip-system") -> Path:
    """Give ``plane`` the chart's operator identity and write a kubeconfig that authenticates as it.

    Applies the chart's CRDs, the namespace and the operator's ServiceAccount,
    ClusterRole and ClusterRoleBinding (not the Deployment), then writes a kubeconfig
    with a one-hour token of that ServiceAccount into ``directory``. A second call on the
    same plane updates the same objects. The release is named after the namespace, so
    operator identities in two namespaces of one plane get separate ClusterRoleBindings.

    Returns:
        The path of the kubeconfig, ``directory/operator-NAMESPACE.kubeconfig``.
    """
    manifests = render_chart(namespace=namespace, release=f"kubeclip-{namespace}")
    identity = _select(manifests, OPERATOR_IDENTITY_KINDS)
    install_chart_crds(plane)
    apply_manifests(plane, [_namespace_manifest(namespace), *identity])
    account = _single(identity, "ServiceAccount")["metadata"]["name"]
    token = request_token(plane, account, namespace)
    return write_token_kubeconfig(plane, token, directory / f"operator-{namespace}.kubeconfig", user=account, namespace=namespace)


def remote_target_kubeconfig(plane: ControlPlane, directory: Path, *, namespace: str = "kubeclip-jobs") -> Path:
    """Install the chart's ``mode: remoteTarget`` objects on ``plane`` and write a kubeconfig for its ServiceAccount.

    ``plane`` stands for a BringYourOwn cluster. The kubeconfig contains a one-hour token
    from the TokenRequest API and names ``namespace`` as its default namespace.

    Returns:
        The path of the kubeconfig, ``directory/remote-target-NAMESPACE.kubeconfig``.
    """
    # Mode remoteTarget renders only the namespace, the identity and its token Secret.
    manifests = render_chart({"mode": "remoteTarget", "remoteTarget": {"namespace": namespace}}, namespace=namespace)
    apply_manifests(plane, manifests)
    account = _single(manifests, "ServiceAccount")["metadata"]["name"]
    token = request_token(plane, account, namespace)
    return write_token_kubeconfig(plane, token, directory / f"remote-target-{namespace}.kubeconfig", user=account, namespace=namespace)


def install_chart_crds(plane: ControlPlane) -> None:
    """Apply the chart's CRDs to ``plane`` and wait until the API server serves them."""
    crds = render_chart_crds()
    apply_manifests(plane, crds)
    _wait_until_crds_established(plane, crds)


def apply_manifests(plane: ControlPlane, manifests: Iterable[dict[str, Any]], *, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
    """Apply ``manifests`` to ``plane`` with kubectl's server-side apply, failing the test with kubectl's output on an error.

    With ``dry_run`` the API server runs admission and validation but stores nothing.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubeclip-chart-") as manifest_file:
        yaml.safe_dump_all(list(manifests), manifest_file)
        manifest_file.flush()
        options = ["--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts", *(["--dry-run=server"] if dry_run else [])]
        result = kubectl(plane, "apply", *options, "-f", manifest_file.name)
    if result.returncode != 0:
        pytest.fail(f"kubectl apply {' '.join(options)} failed on {plane.name}:\n{result.stderr}")
    return result


def request_token(plane: ControlPlane, service_account: str, namespace: str) -> str:
    """Return a token of ``service_account`` from the TokenRequest API, valid for TOKEN_EXPIRATION_SECONDS."""
    # An empty audience list gets the API server's own audience, which it accepts.
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_EXPIRATION_SECONDS))
    response = plane.core.create_namespaced_service_account_token(service_account, namespace, request)
    return response.status.token


def write_token_kubeconfig(plane: ControlPlane, token: str, path: Path, *, user: str, namespace: str) -> Path:
    """Write a kubeconfig for ``plane``'s API server and CA that authenticates with ``token``."""
    context = f"{user}@{plane.name}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": plane.name, "cluster": {"server": plane.state.server, "certificate-authority-data": _ca_data(plane)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": plane.name, "user": user, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }
    return kubeconfig.write_kubeconfig(path, document)


def _helm_template(values: dict[str, Any] | None, *, namespace: str, release: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubeclip-values-") as values_file:
        yaml.safe_dump(values or {}, values_file)
        values_file.flush()
        result = run_helm("template", release, str(CHART_DIR), "--namespace", namespace, "--values", values_file.name, *extra)
    if result.returncode != 0:
        raise ChartRenderError(f"helm template {release} failed with exit code {result.returncode}:\n{result.stderr}")
    return [manifest for manifest in yaml.safe_load_all(result.stdout) if manifest]


def _select(manifests: list[dict[str, Any]], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] in kinds]


def _single(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = _select(manifests, (kind,))
    if len(matching) != 1:
        raise AssertionError(f"the chart rendered {len(matching)} objects of kind {kind}; operator_access expects exactly one")
    return matching[0]


def _namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _ca_data(plane: ControlPlane) -> str:
    # The admin kubeconfig embeds the plane's CA; the kubeconfigs written here reuse it.
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    return admin["clusters"][0]["cluster"]["certificate-authority-data"]


def _wait_until_crds_established(plane: ControlPlane, crds: list[dict[str, Any]]) -> None:
    extensions = client.ApiextensionsV1Api(plane.api_client)
    for crd in crds:
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(condition.type == "Established" and condition.status == "True" for condition in conditions)

        wait_for(established, f"CRD {name} is Established on {plane.name}", timeout=CRD_ESTABLISHED_TIMEOUT_SECONDS)
