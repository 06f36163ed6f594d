"""The lifecycle of a development cluster: ``up``, ``status`` and ``down``.

Called by ``kubeclip.cli.dev`` and by the pytest fixtures in
``tests/support/controlplane.py``. ``up`` builds missing binaries, writes the PKI,
kubeconfigs and kwok Stages into the cluster's data folder, starts etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok on free ports of
127.0.0.1, registers the simulated nodes and waits until they are Ready. The state file
``cluster.json`` in the data folder records ports and processes, so ``status`` and
``down`` work from any later process.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import ssl
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import DEFAULT_CLUSTER_NAME, binaries, components, health, kwok_config, processes
from kubeclip.dev.certificates import CLIENT_IDENTITIES, write_cluster_pki
from kubeclip.dev.components import ClusterLayout, ClusterPorts
from kubeclip.dev.kubeconfig import build_kubeconfig, write_kubeconfig

logger = logging.getLogger(__name__)

#: Seconds to wait for etcd, then kube-apiserver, to become healthy after it starts.
ETCD_START_TIMEOUT_SECONDS = 60.0
APISERVER_START_TIMEOUT_SECONDS = 120.0
#: Seconds to wait for the other components to become healthy and for every node to be Ready.
COMPONENTS_START_TIMEOUT_SECONDS = 120.0
#: Lines of a component's log quoted in a start error.
LOG_TAIL_LINES = 25
_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_NOT_READY_TAINT = "node.kubernetes.io/not-ready"


class ClusterError(RuntimeError):
    """A cluster could not be started, found or stopped."""


@dataclass(frozen=True)
class ClusterState:
    """A started cluster: its name, data folder, ports and processes, as stored in ``cluster.json``."""

    name: str
    data_dir: Path
    ports: ClusterPorts
    processes: tuple[processes.ProcessRecord, ...]

    @property
    def layout(self) -> ClusterLayout:
        return ClusterLayout(self.data_dir)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def save(self) -> None:
        data = {"name": self.name, "ports": self.ports.to_json(), "processes": [record.to_json() for record in self.processes]}
        self.layout.state_file.write_text(json.dumps(data, indent=2) + "\n")


@dataclass(frozen=True)
class ComponentStatus:
    """One component in ``status``: whether its process runs, and its health probes."""

    name: str
    pid: int
    running: bool
    probes: tuple[health.ProbeResult, ...]

    @property
    def healthy(self) -> bool:
        return self.running and all(result.healthy for result in self.probes)


@dataclass(frozen=True)
class NodeStatus:
    """One node in ``status``."""

    name: str
    ready: bool
    gpu_product: str
    gpus: str


@dataclass(frozen=True)
class ClusterStatus:
    """The result of ``status``: components, nodes, and the error of listing nodes when that failed."""

    state: ClusterState
    components: tuple[ComponentStatus, ...]
    nodes: tuple[NodeStatus, ...]
    nodes_error: str | None

    @property
    def healthy(self) -> bool:
        nodes_ready = self.nodes_error is None and all(node.ready for node in self.nodes)
        return nodes_ready and all(component.healthy for component in self.components)


def default_data_dir(name: str) -> Path:
    """Return the data folder of cluster ``name`` when no --data-dir is given."""
    return binaries.cache_root() / "clusters" / name


def validate_cluster_name(name: str) -> None:
    """Raise ClusterError unless ``name`` is a DNS label of at most 40 characters."""
    if not _NAME_PATTERN.match(name):
        raise ClusterError(f"invalid cluster name {name!r}; use lowercase letters, digits and '-', at most 40 characters")


def load_state(name: str, data_dir: Path | None = None) -> ClusterState | None:
    """Return the stored state of cluster ``name``, or None when it was never started or was removed."""
    layout = ClusterLayout(_resolve_data_dir(name, data_dir))
    if not layout.state_file.is_file():
        return None
    data = json.loads(layout.state_file.read_text())
    records = tuple(processes.ProcessRecord.from_json(record) for record in data["processes"])
    return ClusterState(data["name"], layout.data_dir, ClusterPorts.from_json(data["ports"]), records)


def up(name: str = DEFAULT_CLUSTER_NAME, data_dir: Path | None = None) -> ClusterState:
    """Start cluster ``name`` and return once every simulated node is Ready.

    Raises:
        ClusterError: the cluster already runs, the data folder belongs to something else,
            or a component failed to start (the message quotes its log).
        binaries.BuildError: a missing binary could not be built.
    """
    validate_cluster_name(name)
    layout = ClusterLayout(_resolve_data_dir(name, data_dir))
    _prepare_data_dir(name, layout)
    binaries.ensure_binaries(list(components.START_ORDER))
    ports = allocate_ports()
    _write_cluster_files(name, layout, ports)

    # Saved before any process starts, so the next `up` recognises the folder as this cluster's.
    state = ClusterState(name, layout.data_dir, ports, ())
    state.save()
    try:
        state = _start_components(state)
        register_nodes(state)
        wait_for_nodes_ready(state, COMPONENTS_START_TIMEOUT_SECONDS)
    except BaseException:
        _stop_all(load_state(name, layout.data_dir) or state)
        raise
    logger.info("cluster %s is up: %s, kubeconfig %s", name, state.server, state.kubeconfig)
    return state


def down(name: str = DEFAULT_CLUSTER_NAME, data_dir: Path | None = None, *, keep_data: bool = False) -> bool:
    """Stop every process of cluster ``name`` and remove its data folder unless ``keep_data``.

    Returns:
        False when no state was found (nothing to stop), else True.
    """
    state = load_state(name, data_dir)
    if state is None:
        return False
    _stop_all(state)
    if keep_data:
        logger.info("kept the data of cluster %s in %s", name, state.data_dir)
    else:
        shutil.rmtree(state.data_dir)
    return True


def status(name: str = DEFAULT_CLUSTER_NAME, data_dir: Path | None = None) -> ClusterStatus:
    """Probe every component of cluster ``name`` and list its nodes.

    Raises:
        ClusterError: the cluster has no state file.
    """
    state = load_state(name, data_dir)
    if state is None:
        raise ClusterError(f"cluster {name!r} is not running (no state in {ClusterLayout(_resolve_data_dir(name, data_dir)).state_file}); start it with `kubeclip dev cluster up --name {name}`")
    component_statuses = tuple(_component_status(state, record) for record in state.processes)
    try:
        nodes, nodes_error = tuple(_list_node_statuses(state)), None
    except (ApiException, OSError) as error:
        nodes, nodes_error = (), str(error)
    return ClusterStatus(state, component_statuses, nodes, nodes_error)


def allocate_ports() -> ClusterPorts:
    """Return six distinct free ports on 127.0.0.1.

    The sockets stay open until all six are chosen, so the ports are distinct. Another
    process could still take one before a component binds it; that component then fails
    to start with "address already in use" in its log.
    """
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(6)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return ClusterPorts(*(sock.getsockname()[1] for sock in sockets))


def new_api_client(kubeconfig: Path) -> client.ApiClient:
    """Return a Kubernetes ApiClient for ``kubeconfig`` without touching the global default configuration."""
    return config.new_client_from_config(config_file=str(kubeconfig))


def register_nodes(state: ClusterState) -> None:
    """Create the simulated Node objects of ``kwok_config.NODE_POOLS``; existing ones are left alone."""
    with new_api_client(state.kubeconfig) as api_client:
        core = client.CoreV1Api(api_client)
        for node in kwok_config.build_nodes():
            try:
                core.create_node(node)
            except ApiException as error:
                if error.status != 409:
                    raise ClusterError(f"creating node {node['metadata']['name']} failed: HTTP {error.status} {error.reason}: {error.body}") from error


def wait_for_nodes_ready(state: ClusterState, timeout: float) -> None:
    """Wait until every simulated node is Ready and the node lifecycle controller has removed its not-ready taint."""
    expected = {kwok_config.node_name(pool, index) for pool in kwok_config.NODE_POOLS for index in range(pool.node_count)}
    with new_api_client(state.kubeconfig) as api_client:
        core = client.CoreV1Api(api_client)

        def all_ready() -> bool:
            _raise_if_exited(state)
            ready = {node.metadata.name for node in core.list_node().items if _is_schedulable(node)}
            return expected <= ready

        _wait(state, all_ready, timeout, f"nodes {', '.join(sorted(expected))} are Ready and untainted", "kwok")


def restart_component(state: ClusterState, component: str, timeout: float = APISERVER_START_TIMEOUT_SECONDS) -> ClusterState:
    """Stop one component and start it again on the same ports, as a crash or an upgrade would; return the new state.

    Raises:
        ClusterError: the component did not become healthy again within ``timeout`` seconds.
    """
    if component not in components.START_ORDER:
        raise ValueError(f"unknown component {component!r}; choose one of {', '.join(components.START_ORDER)}")
    for record in state.processes:
        if record.name == component:
            processes.stop_process(record)
    state = ClusterState(state.name, state.data_dir, state.ports, tuple(record for record in state.processes if record.name != component))
    state = _start_one(state, component)
    _wait_healthy(state, component, timeout)
    return state


def set_pod_outcome(api_client: client.ApiClient, namespace: str, name: str, phase: str) -> None:
    """Label a Running pod so kwok ends it with ``phase`` "Succeeded" (exit code 0) or "Failed" (exit code 1)."""
    if phase not in ("Succeeded", "Failed"):
        raise ValueError(f"invalid pod outcome {phase!r}; use 'Succeeded' or 'Failed'")
    body = {"metadata": {"labels": {kwok_config.POD_OUTCOME_LABEL: phase}}}
    client.CoreV1Api(api_client).patch_namespaced_pod(name, namespace, body)


def _resolve_data_dir(name: str, data_dir: Path | None) -> Path:
    # Absolute, because the state file and the components' flags must work from any working directory.
    return (data_dir or default_data_dir(name)).absolute()


def _prepare_data_dir(name: str, layout: ClusterLayout) -> None:
    state = load_state(name, layout.data_dir)
    if state is not None and any(processes.is_running(record) for record in state.processes):
        raise ClusterError(f"cluster {name!r} is already running (kubeconfig {state.kubeconfig}); stop it with `kubeclip dev cluster down --name {name}`")
    if state is not None:
        logger.info("removing the stale data of cluster %s in %s", name, layout.data_dir)
        shutil.rmtree(layout.data_dir)
    elif layout.data_dir.exists() and any(layout.data_dir.iterdir()):
        raise ClusterError(f"data folder {layout.data_dir} is not empty and contains no cluster.json; choose an empty or new --data-dir")
    layout.data_dir.mkdir(parents=True, exist_ok=True)


def _write_cluster_files(name: str, layout: ClusterLayout, ports: ClusterPorts) -> None:
    pki = write_cluster_pki(layout.pki.directory, components.FIRST_SERVICE_IP)
    server = f"https://127.0.0.1:{ports.apiserver}"
    ca_pem = pki.ca_certificate.read_bytes()
    for stem, (user, _groups) in CLIENT_IDENTITIES.items():
        kubeconfig = build_kubeconfig(
            cluster_name=f"kubeclip-{name}", server=server, ca_pem=ca_pem,
            certificate_pem=pki.certificate(stem).read_bytes(), key_pem=pki.key(stem).read_bytes(), user=user,
        )  # fmt: skip
        write_kubeconfig(layout.kubeconfig(stem), kubeconfig)
    kwok_config.write_stage_config(layout.stage_config)


def _start_components(state: ClusterState) -> ClusterState:
    # etcd and kube-apiserver must be healthy before the others start; the controller
    # manager, scheduler and kwok then start together and become healthy in parallel.
    for component in components.START_ORDER:
        state = _start_one(state, component)
        if component in ("etcd", "kube-apiserver"):
            timeout = ETCD_START_TIMEOUT_SECONDS if component == "etcd" else APISERVER_START_TIMEOUT_SECONDS
            _wait_healthy(state, component, timeout)
    for component in components.START_ORDER[2:]:
        _wait_healthy(state, component, COMPONENTS_START_TIMEOUT_SECONDS)
    return state


def _start_one(state: ClusterState, component: str) -> ClusterState:
    command = components.build_command(component, binaries.binary_path(component), state.layout, state.ports, state.name)
    record = processes.start_process(component, command, state.layout.log(component))
    state = ClusterState(state.name, state.data_dir, state.ports, (*state.processes, record))
    state.save()
    return state


def _wait_healthy(state: ClusterState, component: str, timeout: float) -> None:
    context = _probe_context(state, component)
    urls = components.health_urls(component, state.ports)

    def healthy() -> bool:
        _raise_if_exited(state)
        return all(health.probe(url, context).healthy for url in urls)

    _wait(state, healthy, timeout, f"{component} answers {', '.join(urls)} with 200", component)


def _wait(state: ClusterState, condition: Callable[[], bool], timeout: float, description: str, component: str) -> None:
    try:
        health.wait_until(condition, timeout=timeout, description=description)
    except health.WaitTimeout as error:
        raise ClusterError(f"{error}; last lines of {state.layout.log(component)}:\n{_log_tail(state.layout.log(component))}") from None


def _raise_if_exited(state: ClusterState) -> None:
    for record in state.processes:
        if not processes.is_running(record):
            raise ClusterError(f"{record.name} exited during startup; last lines of {record.log_path}:\n{_log_tail(Path(record.log_path))}")


def _probe_context(state: ClusterState, component: str) -> ssl.SSLContext | None:
    # etcd and kube-apiserver require a client certificate; the others accept anonymous health checks.
    pki = state.layout.pki
    if component == "kwok":
        return None
    if component == "etcd":
        return health.client_ssl_context(pki.ca_certificate, pki.certificate("apiserver-etcd-client"), pki.key("apiserver-etcd-client"))
    return health.client_ssl_context(pki.ca_certificate, pki.certificate("admin"), pki.key("admin"))


def _component_status(state: ClusterState, record: processes.ProcessRecord) -> ComponentStatus:
    running = processes.is_running(record)
    context = _probe_context(state, record.name)
    probes = tuple(health.probe(url, context) for url in components.health_urls(record.name, state.ports)) if running else ()
    return ComponentStatus(record.name, record.pid, running, probes)


def _list_node_statuses(state: ClusterState) -> list[NodeStatus]:
    with new_api_client(state.kubeconfig) as api_client:
        nodes = client.CoreV1Api(api_client).list_node(_request_timeout=5).items
    return [
        NodeStatus(
            node.metadata.name,
            _is_schedulable(node),
            (node.metadata.labels or {}).get("nvidia.com/gpu.product", "-"),
            (node.status.allocatable or {}).get(kwok_config.GPU_RESOURCE, "0"),
        )
        for node in nodes
    ]


def _is_schedulable(node: client.V1Node) -> bool:
    conditions = node.status.conditions or []
    ready = any(condition.type == "Ready" and condition.status == "True" for condition in conditions)
    tainted = any(taint.key == _NOT_READY_TAINT for taint in node.spec.taints or [])
    return ready and not tainted


def _stop_all(state: ClusterState) -> None:
    # Reverse start order: clients first, etcd last, so nothing logs errors about a missing server.
    for record in reversed(state.processes):
        processes.stop_process(record)


def _log_tail(path: Path) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
