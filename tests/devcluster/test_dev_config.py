"""Unit tests of the pure parts of kubeclip.dev: wrapper module, ldflags, nodes, Stages, kubeconfig, commands."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from kubeclip.dev import binaries, certificates, components, kwok_config, versions
from kubeclip.dev.kubeconfig import build_kubeconfig, write_kubeconfig


def test_wrapper_go_mod_pins_every_staging_module() -> None:
    go_mod = binaries.render_wrapper_go_mod()

    for module in versions.STAGING_MODULES:
        assert f"\tk8s.io/{module} => k8s.io/{module} {versions.STAGING_VERSION}\n" in go_mod
    assert f"\tk8s.io/kubernetes {versions.KUBERNETES_VERSION}\n" in go_mod
    assert f"\tgo.etcd.io/etcd/server/v3 {versions.ETCD_VERSION}\n" in go_mod
    assert "go 1.26.0\n" in go_mod
    assert "godebug default=go1.26\n" in go_mod


def test_staging_version_matches_kubernetes_minor() -> None:
    kubernetes_minor = versions.KUBERNETES_VERSION.split(".")[1:]
    staging_minor = versions.STAGING_VERSION.split(".")[1:]

    assert versions.STAGING_VERSION.startswith("v0.")
    assert kubernetes_minor == staging_minor


def test_tools_go_imports_main_packages_under_build_tag() -> None:
    tools = binaries.render_tools_go(["k8s.io/kubernetes/cmd/kube-scheduler", "go.etcd.io/etcd/server/v3"])

    assert tools.startswith("//go:build tools\n")
    assert '\t_ "go.etcd.io/etcd/server/v3"\n' in tools
    assert '\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n' in tools


def test_kubernetes_ldflags_stamp_version_and_strip() -> None:
    flags = binaries.kubernetes_ldflags("v1.36.3").split(" -X ")

    assert flags[0] == "-s -w"
    assert "k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "k8s.io/component-base/version.gitMinor=36" in flags
    assert "k8s.io/client-go/pkg/version.gitMajor=1" in flags


def test_binary_path_is_versioned_under_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECLIP_CACHE_DIR", str(tmp_path))

    path = binaries.binary_path("kube-apiserver")

    assert path == tmp_path / "bin" / f"kube-apiserver-{versions.KUBERNETES_VERSION}" / "kube-apiserver"
    assert binaries.missing_binaries(["kube-apiserver", "etcd"]) == ["kube-apiserver", "etcd"]


def test_unknown_component_names_known_ones() -> None:
    with pytest.raises(KeyError, match="kube-apiserver"):
        binaries.binary_path("kube-proxy")


def test_default_exec_name_skips_major_version_suffix() -> None:
    assert binaries._default_exec_name("go.etcd.io/etcd/server/v3") == "server"
    assert binaries._default_exec_name("helm.sh/helm/v3/cmd/helm") == "helm"


def _nodes_by_name() -> dict[str, dict]:
    return {node["metadata"]["name"]: node for node in kwok_config.build_nodes()}


def test_gpu_nodes_carry_product_labels_taint_and_capacity() -> None:
    h100 = _nodes_by_name()["kwok-h100-0"]

    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert h100["metadata"]["annotations"][kwok_config.FAKE_NODE_ANNOTATION] == "fake"
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert h100["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_node_pools_cover_gpu_types_and_cpu() -> None:
    products = {node["metadata"]["labels"].get("nvidia.com/gpu.product") for node in kwok_config.build_nodes()}

    assert products == {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40", "NVIDIA-L40S", None}


def test_a100_pool_also_has_gke_accelerator_label() -> None:
    labels = _nodes_by_name()["kwok-a100-0"]["metadata"]["labels"]

    assert labels["cloud.google.com/gke-accelerator"] == "nvidia-a100-80gb"


def test_cpu_node_has_no_gpu_or_taint() -> None:
    cpu = _nodes_by_name()["kwok-cpu-0"]

    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert "taints" not in cpu["spec"]
    assert "nvidia.com/gpu.product" not in cpu["metadata"]["labels"]


def test_stages_omit_automatic_pod_completion() -> None:
    stages = {stage["metadata"]["name"]: stage for stage in kwok_config.build_stages()}

    assert set(stages) == {"node-initialize", "node-heartbeat", "pod-ready", "pod-succeeded", "pod-failed", "pod-stop-on-delete", "pod-delete"}
    assert stages["pod-succeeded"]["spec"]["selector"]["matchLabels"] == {kwok_config.POD_OUTCOME_LABEL: "Succeeded"}
    assert stages["pod-failed"]["spec"]["selector"]["matchLabels"] == {kwok_config.POD_OUTCOME_LABEL: "Failed"}
    assert "exitCode: 1\n" in stages["pod-failed"]["spec"]["next"]["statusTemplate"]
    assert stages["pod-delete"]["spec"]["next"] == {"delete": True}


def test_stage_config_file_is_multi_document_yaml(tmp_path: Path) -> None:
    path = kwok_config.write_stage_config(tmp_path / "stages.yaml")

    documents = list(yaml.safe_load_all(path.read_text()))

    assert len(documents) == len(kwok_config.build_stages())
    assert {document["kind"] for document in documents} == {"Stage"}


def test_kubeconfig_embeds_credentials_and_is_private(tmp_path: Path) -> None:
    kubeconfig = build_kubeconfig(
        cluster_name="kubeclip-test", server="https://127.0.0.1:6443", ca_pem=b"CA", certificate_pem=b"CERT", key_pem=b"KEY", user="admin"
    )

    path = write_kubeconfig(tmp_path / "admin.kubeconfig", kubeconfig)

    loaded = yaml.safe_load(path.read_text())
    assert loaded["current-context"] == "admin@kubeclip-test"
    assert loaded["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(loaded["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(loaded["users"][0]["user"]["client-key-data"]) == b"KEY"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cluster_pki_signs_admin_into_system_masters(tmp_path: Path) -> None:
    pki = certificates.write_cluster_pki(tmp_path, components.FIRST_SERVICE_IP)

    admin = x509.load_pem_x509_certificate(pki.certificate("admin").read_bytes())
    serving = x509.load_pem_x509_certificate(pki.certificate("apiserver").read_bytes())
    organizations = [attribute.value for attribute in admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    addresses = [str(address) for address in serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)]
    assert organizations == ["system:masters"]
    assert addresses == ["127.0.0.1", components.FIRST_SERVICE_IP]
    assert admin.issuer == x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes()).subject


def test_components_bind_only_loopback(tmp_path: Path) -> None:
    layout = components.ClusterLayout(tmp_path)
    ports = components.ClusterPorts(2379, 2380, 6443, 10257, 10259, 10247)

    for component in components.START_ORDER:
        command = components.build_command(component, Path("/bin") / component, layout, ports, "test")
        # The token issuer is an identifier written into tokens, not an address anything connects to.
        addresses = [argument for argument in command if ("://" in argument or "address=" in argument) and "issuer=" not in argument]
        assert all("127.0.0.1" in argument for argument in addresses), (component, addresses)


def test_apiserver_enables_rbac_and_token_signing(tmp_path: Path) -> None:
    layout = components.ClusterLayout(tmp_path)
    ports = components.ClusterPorts(2379, 2380, 6443, 10257, 10259, 10247)

    command = components.build_command("kube-apiserver", Path("kube-apiserver"), layout, ports, "test")

    assert "--authorization-mode=RBAC" in command
    assert f"--service-account-signing-key-file={layout.pki.service_account_key}" in command
    assert "--secure-port=6443" in command
