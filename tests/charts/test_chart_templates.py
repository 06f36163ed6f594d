"""What ``helm lint`` and ``helm template`` make of the chart in each mode, without a cluster.

Scenario values files sit in ``charts/kubeclip/ci/``; the server-side checks are in
``test_chart_on_cluster.py``.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeclip.api.cluster import ClipCluster
from tests.charts.permissions import OPERATOR_PERMISSIONS, REMOTE_TARGET_PERMISSIONS, rule_permissions
from tests.support.operator_access import CHART_DIR, REPO, ChartRenderError, render_chart, run_helm

NAMESPACE = "kubeclip-system"
SCENARIO_FILES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
CLUSTER_SCOPED_KINDS = {"ClusterRole", "ClusterRoleBinding", "ClipCluster", "Namespace"}


def objects_of(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def single(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = objects_of(manifests, kind)
    assert len(matching) == 1, f"expected one {kind}, rendered {len(matching)}"
    return matching[0]


def operator_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    containers = single(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [container["name"] for container in containers] == ["operator"]
    return containers[0]


def option_values(arguments: list[str], option: str) -> list[str]:
    """Return the value after each occurrence of ``option`` in an argument list."""
    return [arguments[index + 1] for index, argument in enumerate(arguments) if argument == option]


@pytest.fixture(scope="module")
def operator_manifests() -> list[dict[str, Any]]:
    return render_chart(namespace=NAMESPACE)


@pytest.fixture(scope="module")
def remote_manifests() -> list[dict[str, Any]]:
    return render_chart({"mode": "remoteTarget"}, namespace=NAMESPACE)


# helm lint and the chart's metadata.


@pytest.mark.parametrize("values_file", [None, *SCENARIO_FILES], ids=lambda path: path.name if path else "defaults")
def test_helm_lint_passes_strict(values_file: Path | None) -> None:
    arguments = ["lint", "--strict", str(CHART_DIR)]
    if values_file is not None:
        arguments += ["--values", str(values_file)]
    result = run_helm(*arguments)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scenarios_cover_both_modes() -> None:
    modes = {yaml.safe_load(path.read_text()).get("mode", "operator") for path in SCENARIO_FILES}
    assert modes == {"operator", "remoteTarget"}


def test_app_version_matches_pyproject() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "kubeclip"


# Mode operator.


def test_operator_mode_renders_operator_objects(operator_manifests: list[dict[str, Any]]) -> None:
    kinds = Counter(manifest["kind"] for manifest in operator_manifests)
    assert kinds == {
        "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "Service": 1,
        "Deployment": 1, "ClipCluster": 1, "ConfigMap": 2,
    }  # fmt: skip


def test_namespaced_objects_in_release_namespace(operator_manifests: list[dict[str, Any]]) -> None:
    for manifest in operator_manifests:
        if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]["name"]
        else:
            assert "namespace" not in manifest["metadata"], manifest["metadata"]["name"]


def test_cluster_role_grants_exactly_operator_permissions(operator_manifests: list[dict[str, Any]]) -> None:
    rules = single(operator_manifests, "ClusterRole")["rules"]
    granted = rule_permissions(rules)
    assert sorted(map(str, granted - OPERATOR_PERMISSIONS)) == []
    assert sorted(map(str, OPERATOR_PERMISSIONS - granted)) == []
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"rule {rule} narrows or widens by other fields"


def test_cluster_role_binding_names_operator_account(operator_manifests: list[dict[str, Any]]) -> None:
    account = single(operator_manifests, "ServiceAccount")
    binding = single(operator_manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": single(operator_manifests, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    assert account["automountServiceAccountToken"] is False


def test_deployment_runs_one_operator_at_a_time(operator_manifests: list[dict[str, Any]]) -> None:
    deployment = single(operator_manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["serviceAccountName"] == single(operator_manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["spec"]["automountServiceAccountToken"] is True


def test_deployment_default_arguments(operator_manifests: list[dict[str, Any]]) -> None:
    container = operator_container(operator_manifests)
    image = "ghcr.io/kubeclip/kubeclip:0.1.0"
    assert container["image"] == image
    assert container["command"] == ["kubeclip"]
    arguments = container["args"]
    assert arguments[0] == "operator"
    assert option_values(arguments, "--namespace") == []
    assert option_values(arguments, "--trainer-image") == [image]
    assert option_values(arguments, "--default-cluster") == ["managed"]
    assert option_values(arguments, "--metrics-port") == ["8080"]
    assert option_values(arguments, "--health-port") == ["8081"]
    assert option_values(arguments, "--resync-seconds") == ["30"]
    assert option_values(arguments, "--log-format") == ["json"]


def test_deployment_arguments_follow_values() -> None:
    values = {
        "image": {"repository": "registry.example/kubeclip", "tag": "dev"},
        "operator": {
            "watchNamespaces": ["team-a", "team-b"], "trainerImage": "registry.example/trainer:2", "defaultCluster": "gpu-farm",
            "metricsPort": 9090, "healthPort": 9091, "resyncSeconds": 120, "logFormat": "text",
            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
    }  # fmt: skip
    manifests = render_chart(values)
    container = operator_container(manifests)
    arguments = container["args"]
    assert container["image"] == "registry.example/kubeclip:dev"
    assert option_values(arguments, "--namespace") == ["team-a", "team-b"]
    assert option_values(arguments, "--trainer-image") == ["registry.example/trainer:2"]
    assert option_values(arguments, "--default-cluster") == ["gpu-farm"]
    assert option_values(arguments, "--metrics-port") == ["9090"]
    assert option_values(arguments, "--health-port") == ["9091"]
    assert option_values(arguments, "--resync-seconds") == ["120"]
    assert option_values(arguments, "--log-format") == ["text"]
    assert container["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"metrics": 9090, "health": 9091}


def test_liveness_probe_uses_health_port(operator_manifests: list[dict[str, Any]]) -> None:
    container = operator_container(operator_manifests)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_pod_meets_restricted_security(operator_manifests: list[dict[str, Any]]) -> None:
    pod = single(operator_manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(operator_manifests)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert "limits" in container["resources"]


def test_metrics_service_targets_metrics_port(operator_manifests: list[dict[str, Any]]) -> None:
    service = single(operator_manifests, "Service")
    pod_labels = single(operator_manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_managed_cluster_has_default_gpu_pools(operator_manifests: list[dict[str, Any]]) -> None:
    manifest = single(operator_manifests, "ClipCluster")
    cluster = ClipCluster.model_validate(manifest)
    assert cluster.metadata.name == "managed"
    assert cluster.spec.type.value == "Managed"
    products = {pool.gpu_type.value: pool.node_selector for pool in cluster.spec.gpu_pools}
    assert products == {
        "H100": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "A100": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "L40": {"nvidia.com/gpu.product": "NVIDIA-L40"},
    }
    for pool in manifest["spec"]["gpuPools"]:
        assert pool["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_managed_cluster_can_be_turned_off() -> None:
    manifests = render_chart({"managedCluster": {"enabled": False}})
    assert objects_of(manifests, "ClipCluster") == []


def test_dashboards_labelled_for_sidecar(operator_manifests: list[dict[str, Any]]) -> None:
    configmaps = objects_of(operator_manifests, "ConfigMap")
    assert sorted(key for configmap in configmaps for key in configmap["data"]) == ["kubeclip-fleet.json", "kubeclip-run.json"]
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_dashboards_can_be_turned_off() -> None:
    manifests = render_chart({"grafana": {"dashboards": {"enabled": False}}})
    assert objects_of(manifests, "ConfigMap") == []


def test_monitors_rendered_only_when_enabled(operator_manifests: list[dict[str, Any]]) -> None:
    assert objects_of(operator_manifests, "ServiceMonitor") == []
    assert objects_of(operator_manifests, "PodMonitor") == []
    manifests = render_chart({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}, "podMonitor": {"enabled": True}})
    service_monitor = single(manifests, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= single(manifests, "Service")["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in service_monitor["spec"]["endpoints"]] == ["metrics"]
    pod_monitor = single(manifests, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "kubeclip-trainer"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podTargetLabels"] == ["kubeclip.dev/job-namespace", "kubeclip.dev/job-name"]


# Mode remoteTarget.


def test_remote_mode_renders_only_target_objects(remote_manifests: list[dict[str, Any]]) -> None:
    kinds = Counter(manifest["kind"] for manifest in remote_manifests)
    assert kinds == {"Namespace": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Secret": 1}
    for manifest in remote_manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "kubeclip-jobs", manifest["kind"]
    assert single(remote_manifests, "Namespace")["metadata"]["name"] == "kubeclip-jobs"


def test_remote_role_grants_exactly_target_permissions(remote_manifests: list[dict[str, Any]]) -> None:
    granted = rule_permissions(single(remote_manifests, "Role")["rules"])
    assert sorted(map(str, granted - REMOTE_TARGET_PERMISSIONS)) == []
    assert sorted(map(str, REMOTE_TARGET_PERMISSIONS - granted)) == []


def test_remote_binding_and_token_name_account(remote_manifests: list[dict[str, Any]]) -> None:
    account = single(remote_manifests, "ServiceAccount")
    assert account["metadata"]["name"] == "kubeclip-operator-remote"
    binding = single(remote_manifests, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": single(remote_manifests, "Role")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubeclip-operator-remote", "namespace": "kubeclip-jobs"}]
    secret = single(remote_manifests, "Secret")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "kubeclip-operator-remote"}


def test_remote_namespace_follows_values() -> None:
    manifests = render_chart({"mode": "remoteTarget", "remoteTarget": {"namespace": "gpu-jobs", "createNamespace": False}})
    assert objects_of(manifests, "Namespace") == []
    assert {manifest["metadata"]["namespace"] for manifest in manifests} == {"gpu-jobs"}


# values.yaml and values.schema.json.

SCHEMA_REJECTIONS = [
    ({"mode": "remote"}, "/mode", "value must be one of 'operator', 'remoteTarget'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "value must be one of"),
    ({"operator": {"metricsPort": "8080"}}, "/operator/metricsPort", "got string, want integer"),
    ({"operator": {"healthPort": 70000}}, "/operator/healthPort", "maximum"),
    ({"operator": {"logFormat": "yaml"}}, "/operator/logFormat", "value must be one of 'json', 'text'"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0", "'Team_A' does not match pattern"),
    ({"imagee": {"tag": "dev"}}, "", "additional properties 'imagee' not allowed"),
    ({"managedCluster": {"gpuPools": []}}, "/managedCluster/gpuPools", "minItems"),
    ({"managedCluster": {"gpuPools": [{"gpuType": "L40S", "nodeSelector": {"a": "b"}}]}}, "/managedCluster/gpuPools/0/gpuType", "value must be one of"),
    ({"managedCluster": {"gpuPools": [{"gpuType": "L40", "nodeSelector": {}}]}}, "/managedCluster/gpuPools/0/nodeSelector", "minProperties"),
    ({"remoteTarget": {"namespace": "Jobs"}}, "/remoteTarget/namespace", "'Jobs' does not match pattern"),
]


@pytest.mark.parametrize("values, location, message", SCHEMA_REJECTIONS, ids=[location or "/" for _, location, _ in SCHEMA_REJECTIONS])
def test_schema_rejects_invalid_value(values: dict[str, Any], location: str, message: str) -> None:
    with pytest.raises(ChartRenderError, match="values don't meet the specifications of the schema") as caught:
        render_chart(values)
    assert f"at '{location}': {message}" in str(caught.value)


def test_every_values_leaf_documented() -> None:
    """Each value the schema describes as a leaf has a comment line right above its key in values.yaml."""
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    text = (CHART_DIR / "values.yaml").read_text()
    lines = text.splitlines()
    undocumented = [
        path for path, line in leaf_key_lines(yaml.compose(text), schema, "") if not lines[line - 1].lstrip().startswith("#")
    ]
    assert undocumented == []


def leaf_key_lines(node: yaml.Node, schema: dict[str, Any], path: str) -> list[tuple[str, int]]:
    """Return (dotted path, 0-based line) of every key whose schema has no "properties" of its own."""
    found = []
    for key_node, value_node in node.value:
        key_path = f"{path}.{key_node.value}".lstrip(".")
        child_schema = schema["properties"][key_node.value]
        if "properties" in child_schema and isinstance(value_node, yaml.MappingNode):
            found += leaf_key_lines(value_node, child_schema, key_path)
        else:
            found.append((key_path, key_node.start_mark.line))
    return found
