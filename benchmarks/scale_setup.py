"""The scale benchmark's cluster: a development control plane with enough simulated H100 nodes, and the operator.

``operator_scale.py`` calls these steps in order, and ``stop_operator`` and
``kubeclip.dev.cluster.down`` on the way out. Nothing here waits on a trainer: no
trainer process runs in this benchmark.
"""

from __future__ import annotations

import base64
import math
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import binaries, health
from kubeclip.dev.kwok_config import NodePool, build_node

GROUP, VERSION = "kubeclip.dev", "v1alpha1"
H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"
#: One trainer pod requests one GPU, and a simulated H100 node has 8.
GPUS_PER_NODE = 8
#: Nodes beyond the exact need, a margin so that GPU capacity never limits the run.
SPARE_NODES = 5
SECRET_NAME = "s3-credentials"
#: Seconds to wait for the CRDs to be served, the extra nodes to be Ready and the operator's /healthz.
SETUP_TIMEOUT_SECONDS = 180.0
OPERATOR_STOP_TIMEOUT_SECONDS = 30.0
REPOSITORY = Path(__file__).resolve().parent.parent


def install_crds(kubeconfig: Path) -> None:
    """Apply crds/ with the control plane's kubectl and wait until the API server serves them."""
    kubectl = str(binaries.binary_path("kubectl"))
    base = [kubectl, f"--kubeconfig={kubeconfig}"]
    subprocess.run([*base, "apply", "--server-side", "-f", str(REPOSITORY / "crds")], check=True, capture_output=True, text=True)
    subprocess.run(
        [*base, "wait", "--for=condition=Established", "crd", "--all", f"--timeout={int(SETUP_TIMEOUT_SECONDS)}s"], check=True, capture_output=True, text=True
    )


def extra_node_count(jobs: int) -> int:
    """Return how many H100 nodes to add so that every trainer pod gets a GPU."""
    return math.ceil(jobs / GPUS_PER_NODE) + SPARE_NODES


def register_h100_nodes(core: client.CoreV1Api, count: int) -> list[str]:
    """Create ``count`` simulated H100 nodes that kwok manages, and return their names."""
    pool = NodePool("h100-scale", count, "208", "1843Gi", H100_PRODUCT, GPUS_PER_NODE, 81559, "hopper")
    names = []
    for index in range(count):
        node = build_node(pool, index)
        core.create_node(node)
        names.append(node["metadata"]["name"])
    return names


def wait_for_nodes(core: client.CoreV1Api, names: list[str]) -> None:
    """Wait until every node in ``names`` is Ready and the node lifecycle controller has removed its not-ready taint."""
    expected = set(names)

    def all_schedulable() -> bool:
        nodes = core.list_node(label_selector="kubeclip.dev/pool=h100-scale").items
        return expected <= {node.metadata.name for node in nodes if _schedulable(node)}

    health.wait_until(all_schedulable, timeout=SETUP_TIMEOUT_SECONDS, description=f"{len(names)} extra H100 nodes are Ready and untainted")


def _schedulable(node: client.V1Node) -> bool:
    ready = any(condition.type == "Ready" and condition.status == "True" for condition in node.status.conditions or [])
    tainted = any(taint.key == "node.kubernetes.io/not-ready" for taint in node.spec.taints or [])
    return ready and not tainted


def create_managed_cluster(api_client: client.ApiClient) -> None:
    """Create the Managed ClipCluster ``managed`` with one H100 pool and no capacity limit."""
    pool = {
        "gpuType": "H100",
        "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClipCluster", "metadata": {"name": "managed"}, "spec": {"type": "Managed", "gpuPools": [pool]}}
    client.CustomObjectsApi(api_client).create_cluster_custom_object(GROUP, VERSION, "clipclusters", body)


def create_namespace(core: client.CoreV1Api, namespace: str) -> None:
    """Create the jobs' namespace with a dummy S3 credentials Secret, and wait for its default ServiceAccount."""
    core.create_namespace({"metadata": {"name": namespace}})
    values = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark-not-a-secret"}
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    core.create_namespaced_secret(namespace, {"metadata": {"name": SECRET_NAME}, "data": data})

    def has_default_service_account() -> bool:
        try:
            core.read_namespaced_service_account("default", namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    health.wait_until(has_default_service_account, timeout=SETUP_TIMEOUT_SECONDS, description=f"namespace {namespace} has its default ServiceAccount")


def training_job(namespace: str, name: str) -> dict[str, Any]:
    """Return a Small-preset H100 ClipTrainingJob with an s3:// dataset and output. Nothing is ever downloaded."""
    s3 = {"region": "us-east-1", "secretRef": {"name": SECRET_NAME}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"preset": "Small"},
            "dataset": {"source": {"uri": "s3://kubeclip-benchmark/datasets/photos.zip", **s3}},
            "infrastructure": {"gpuType": "H100"},
            "training": {"epochs": 1},
            "output": {"storageUri": f"s3://kubeclip-benchmark/runs/{name}", **s3},
        },
    }


def free_port() -> int:
    """Return a port on 127.0.0.1 that is free now. Another process could take it before the operator binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_operator(kubeconfig: Path, metrics_port: int, health_port: int, resync_seconds: float, log_path: Path) -> subprocess.Popen:
    """Start ``kubeclip operator`` as a child process and wait until its /healthz returns 200.

    Raises:
        RuntimeError: the operator exited during startup; the message quotes its log.
    """
    command = [
        sys.executable, "-m", "kubeclip.cli.main", "operator", f"--kubeconfig={kubeconfig}",
        f"--metrics-port={metrics_port}", f"--health-port={health_port}", "--bind-address=127.0.0.1",
        f"--resync-seconds={resync_seconds:g}", "--trainer-image=kubeclip:benchmark", "--log-format=json",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPOSITORY)

    def healthy() -> bool:
        if process.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the operator exited with code {process.returncode} during startup; last lines of {log_path}:\n{tail}")
        return health.probe(f"http://127.0.0.1:{health_port}/healthz").healthy

    try:
        health.wait_until(healthy, timeout=SETUP_TIMEOUT_SECONDS, description="the operator's /healthz returns 200")
    except BaseException:
        stop_operator(process)
        raise
    return process


def stop_operator(process: subprocess.Popen) -> None:
    """Send SIGTERM, and SIGKILL when the operator has not exited after 30 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(OPERATOR_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
