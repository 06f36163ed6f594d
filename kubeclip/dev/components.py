"""Command lines, file layout and ports of the components of one development cluster.

Pure functions: ``kubeclip.dev.cluster`` calls them to start the processes and to probe
them. Every component listens on 127.0.0.1 only, on ports chosen when the cluster starts,
so several clusters can run side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubeclip.dev.certificates import FRONT_PROXY_USER, ClusterPki

#: ClusterIP range of Services. Its first address is the ``kubernetes`` Service.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
FIRST_SERVICE_IP = "10.96.0.1"
#: Pod IPs that kwok hands out; kept apart from the Service range.
POD_CIDR = "10.244.0.0/16"
#: Issuer of service-account tokens, the value a real cluster uses.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: How often the node lifecycle controller checks node health, in seconds. Kubernetes'
#: default is 5; 2 lets the not-ready taint go sooner after kwok marks a node Ready.
NODE_MONITOR_PERIOD_SECONDS = 2
#: Lease duration that kwok sets on each node's Lease, in seconds; the kubelet's default.
NODE_LEASE_DURATION_SECONDS = 40
#: Order in which ``up`` starts the components; ``down`` stops them in reverse.
START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class ClusterPorts:
    """TCP ports on 127.0.0.1 of one cluster."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterPorts:
        return cls(**{key: int(value) for key, value in data.items()})


@dataclass(frozen=True)
class ClusterLayout:
    """Files of one cluster under its data folder."""

    data_dir: Path

    @property
    def pki(self) -> ClusterPki:
        return ClusterPki(self.data_dir / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.data_dir / "etcd"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def stage_config(self) -> Path:
        return self.data_dir / "kwok-stages.yaml"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    def kubeconfig(self, component: str) -> Path:
        return self.data_dir / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def build_command(component: str, binary: Path, layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    """Return the command line that starts ``component`` of the cluster."""
    builders = {
        "etcd": _etcd_arguments,
        "kube-apiserver": _apiserver_arguments,
        "kube-controller-manager": _controller_manager_arguments,
        "kube-scheduler": _scheduler_arguments,
        "kwok": _kwok_arguments,
    }
    if component not in builders:
        raise KeyError(f"unknown component {component!r}; expected one of {', '.join(builders)}")
    return [str(binary), *builders[component](layout, ports, cluster_name)]


def health_urls(component: str, ports: ClusterPorts) -> list[str]:
    """Return the health endpoints of ``component``; all must return HTTP 200."""
    urls = {
        "etcd": [f"https://127.0.0.1:{ports.etcd_client}/health"],
        "kube-apiserver": [f"https://127.0.0.1:{ports.apiserver}/livez", f"https://127.0.0.1:{ports.apiserver}/readyz"],
        "kube-controller-manager": [f"https://127.0.0.1:{ports.controller_manager}/healthz"],
        "kube-scheduler": [f"https://127.0.0.1:{ports.scheduler}/livez", f"https://127.0.0.1:{ports.scheduler}/readyz"],
        "kwok": [f"http://127.0.0.1:{ports.kwok}/healthz"],
    }
    return urls[component]


def _etcd_arguments(layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    pki = layout.pki
    client_url = f"https://127.0.0.1:{ports.etcd_client}"
    peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        f"--name={cluster_name}",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={cluster_name}={peer_url}",
        f"--cert-file={pki.certificate('loopback-serving')}",
        f"--key-file={pki.key('loopback-serving')}",
        f"--trusted-ca-file={pki.ca_certificate}",
        "--client-cert-auth=true",
        # A throwaway cluster needs no durability, and fsync dominates etcd latency on slow disks.
        "--unsafe-no-fsync=true",
        "--auto-compaction-retention=1",
        "--log-level=warn",
    ]


def _apiserver_arguments(layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    pki = layout.pki
    return [
        f"--etcd-servers=https://127.0.0.1:{ports.etcd_client}",
        f"--etcd-cafile={pki.ca_certificate}",
        f"--etcd-certfile={pki.certificate('apiserver-etcd-client')}",
        f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        # A loopback advertise address fails validation of the kubernetes Endpoints object,
        # so the endpoint reconciler is off; nothing in this cluster runs inside a pod.
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.certificate('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--cert-dir={layout.data_dir / 'apiserver'}",
        f"--client-ca-file={pki.ca_certificate}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-account-key-file={pki.service_account_key}",
        "--authorization-mode=RBAC",
        # Front-proxy settings: kube-apiserver forwards requests to aggregated API servers
        # with this client certificate, and the other components read the CA from the
        # extension-apiserver-authentication ConfigMap (they log errors without it).
        f"--requestheader-client-ca-file={pki.ca_certificate}",
        f"--requestheader-allowed-names={FRONT_PROXY_USER}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.certificate('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        "--allow-privileged=true",
    ]


def _controller_manager_arguments(layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    pki = layout.pki
    return [
        *_component_client_arguments(layout, "kube-controller-manager"),
        *_component_serving_arguments(layout, "kube-controller-manager", ports.controller_manager),
        # Each controller acts as its own service account, with the RBAC roles Kubernetes bootstraps for it.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_certificate}",
        f"--cluster-signing-cert-file={pki.ca_certificate}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--node-monitor-period={NODE_MONITOR_PERIOD_SECONDS}s",
    ]


def _scheduler_arguments(layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    return [
        *_component_client_arguments(layout, "kube-scheduler"),
        *_component_serving_arguments(layout, "kube-scheduler", ports.scheduler),
    ]


def _kwok_arguments(layout: ClusterLayout, ports: ClusterPorts, cluster_name: str) -> list[str]:
    return [
        f"--kubeconfig={layout.kubeconfig('kwok')}",
        f"--config={layout.stage_config}",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={POD_CIDR}",
        # kwok applies its configuration defaults only when --config contains a
        # KwokConfiguration, and without a lease duration it renews no node leases.
        f"--node-lease-duration-seconds={NODE_LEASE_DURATION_SECONDS}",
        # kwok's HTTP server carries only health and metrics endpoints here.
        f"--server-address=127.0.0.1:{ports.kwok}",
    ]


def _component_client_arguments(layout: ClusterLayout, component: str) -> list[str]:
    kubeconfig = layout.kubeconfig(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # One instance per cluster, so there is no lease to wait for after a restart.
        "--leader-elect=false",
    ]


def _component_serving_arguments(layout: ClusterLayout, component: str, port: int) -> list[str]:
    pki = layout.pki
    return [
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.certificate('loopback-serving')}",
        f"--tls-private-key-file={pki.key('loopback-serving')}",
    ]
