"""The chart's RBAC on a real API server: the operator identities have what they need and nothing listed as denied.

Each check is a SelfSubjectAccessReview sent with the identity's own kubeconfig, as
``tests.support.operator_access`` writes it. The remote-target identity lives on
``second_cluster``, which stands for a BringYourOwn cluster.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev.cluster import new_api_client
from tests.charts.permissions import (
    OPERATOR_DENIED,
    OPERATOR_PERMISSIONS,
    REMOTE_TARGET_DENIED_CLUSTER_WIDE,
    REMOTE_TARGET_DENIED_IN_NAMESPACE,
    REMOTE_TARGET_PERMISSIONS,
    Permission,
)
from tests.support.controlplane import ControlPlane, create_namespace
from tests.support.operator_access import TOKEN_EXPIRATION_SECONDS, operator_kubeconfig, remote_target_kubeconfig

pytestmark = pytest.mark.controlplane

OPERATOR_NAMESPACE = "kubeclip-system"
REMOTE_NAMESPACE = "kubeclip-jobs"
HTTP_FORBIDDEN = 403


def is_allowed(api_client: client.ApiClient, permission: Permission, namespace: str | None = None) -> bool:
    """Ask the API server whether the client's identity may do ``permission``; no namespace means every namespace."""
    attributes = client.V1ResourceAttributes(
        group=permission.group,
        resource=permission.base_resource,
        subresource=permission.subresource or None,
        verb=permission.verb,
        namespace=namespace,
    )
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes))
    return client.AuthorizationV1Api(api_client).create_self_subject_access_review(review).status.allowed


def username(api_client: client.ApiClient) -> str:
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
    return review.status.user_info.username


def token_lifetime_seconds(kubeconfig_path: Path) -> int:
    """Return exp minus iat of the JWT in a kubeconfig written by operator_access."""
    token = yaml.safe_load(kubeconfig_path.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims["exp"] - claims["iat"]


def configmap_role(name: str, namespace: str, resources: list[str], verbs: list[str]) -> dict:
    """A Role like the one the operator creates for each trainer."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": resources, "resourceNames": [f"{name}-progress"], "verbs": verbs}],
    }


@pytest.fixture(scope="module")
def operator_kubeconfig_path(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator-access"), namespace=OPERATOR_NAMESPACE)


@pytest.fixture(scope="module")
def operator_api(operator_kubeconfig_path: Path) -> Iterator[client.ApiClient]:
    with new_api_client(operator_kubeconfig_path) as api_client:
        yield api_client


@pytest.fixture
def scratch_namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"rbac-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="module")
def remote_kubeconfig_path(second_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return remote_target_kubeconfig(second_cluster, tmp_path_factory.mktemp("remote-access"), namespace=REMOTE_NAMESPACE)


@pytest.fixture(scope="module")
def remote_api(remote_kubeconfig_path: Path) -> Iterator[client.ApiClient]:
    with new_api_client(remote_kubeconfig_path) as api_client:
        yield api_client


# The operator in its home cluster.


def test_operator_kubeconfig_authenticates_as_service_account(operator_api: client.ApiClient, operator_kubeconfig_path: Path) -> None:
    assert username(operator_api) == f"system:serviceaccount:{OPERATOR_NAMESPACE}:kubeclip-{OPERATOR_NAMESPACE}-operator"
    assert token_lifetime_seconds(operator_kubeconfig_path) == TOKEN_EXPIRATION_SECONDS


@pytest.mark.parametrize("permission", sorted(OPERATOR_PERMISSIONS), ids=str)
def test_operator_allowed_in_every_namespace(operator_api: client.ApiClient, permission: Permission) -> None:
    assert is_allowed(operator_api, permission)


@pytest.mark.parametrize("permission", sorted(OPERATOR_DENIED), ids=str)
def test_operator_denied(operator_api: client.ApiClient, permission: Permission) -> None:
    assert not is_allowed(operator_api, permission)
    assert not is_allowed(operator_api, permission, namespace=OPERATOR_NAMESPACE)


def test_operator_creates_trainer_role(operator_api: client.ApiClient, scratch_namespace: str) -> None:
    namespace = scratch_namespace
    rbac = client.RbacAuthorizationV1Api(operator_api)
    # RBAC lets the operator grant the permissions it has itself.
    rbac.create_namespaced_role(namespace, configmap_role("trainer", namespace, ["configmaps"], ["get", "patch", "update"]))
    # Secrets it may only read, so it may not grant their update.
    with pytest.raises(ApiException) as caught:
        rbac.create_namespaced_role(namespace, configmap_role("escalation", namespace, ["secrets"], ["update"]))
    assert caught.value.status == HTTP_FORBIDDEN
    assert "attempting to grant RBAC permissions not currently held" in caught.value.body


def test_operator_kubeconfig_call_repeats(cluster: ControlPlane, tmp_path: Path, operator_kubeconfig_path: Path) -> None:
    again = operator_kubeconfig(cluster, tmp_path, namespace=OPERATOR_NAMESPACE)
    with new_api_client(again) as api_client:
        assert is_allowed(api_client, Permission("batch", "jobs", "create"))
    bindings = client.RbacAuthorizationV1Api(cluster.api_client).list_cluster_role_binding().items
    subjects = [subject for binding in bindings for subject in binding.subjects or [] if subject.namespace == OPERATOR_NAMESPACE]
    assert [subject.name for subject in subjects] == [f"kubeclip-{OPERATOR_NAMESPACE}-operator"]


# The operator's identity in a BringYourOwn cluster.


def test_remote_kubeconfig_authenticates_as_service_account(remote_api: client.ApiClient) -> None:
    assert username(remote_api) == f"system:serviceaccount:{REMOTE_NAMESPACE}:kubeclip-operator-remote"


@pytest.mark.parametrize("permission", sorted(REMOTE_TARGET_PERMISSIONS), ids=str)
def test_remote_allowed_in_target_namespace(remote_api: client.ApiClient, permission: Permission) -> None:
    assert is_allowed(remote_api, permission, namespace=REMOTE_NAMESPACE)


@pytest.mark.parametrize("permission", sorted(REMOTE_TARGET_PERMISSIONS), ids=str)
def test_remote_denied_in_other_namespace(remote_api: client.ApiClient, permission: Permission) -> None:
    assert not is_allowed(remote_api, permission, namespace="default")
    assert not is_allowed(remote_api, permission)


@pytest.mark.parametrize("permission", sorted(REMOTE_TARGET_DENIED_IN_NAMESPACE), ids=str)
def test_remote_denied_in_target_namespace(remote_api: client.ApiClient, permission: Permission) -> None:
    assert not is_allowed(remote_api, permission, namespace=REMOTE_NAMESPACE)


@pytest.mark.parametrize("permission", sorted(REMOTE_TARGET_DENIED_CLUSTER_WIDE), ids=str)
def test_remote_denied_cluster_wide(remote_api: client.ApiClient, permission: Permission) -> None:
    assert not is_allowed(remote_api, permission)


def test_remote_creates_trainer_role(remote_api: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(remote_api)
    name = f"trainer-{uuid.uuid4().hex[:8]}"
    rbac.create_namespaced_role(REMOTE_NAMESPACE, configmap_role(name, REMOTE_NAMESPACE, ["configmaps"], ["get", "patch", "update"]))
    rbac.delete_namespaced_role(name, REMOTE_NAMESPACE)
    # Pods it may only read, so it may not grant their creation.
    with pytest.raises(ApiException) as caught:
        rbac.create_namespaced_role(REMOTE_NAMESPACE, configmap_role(name, REMOTE_NAMESPACE, ["pods"], ["create"]))
    assert caught.value.status == HTTP_FORBIDDEN
