"""The pod runner: trainer pods on kwok nodes run as local processes, and their exit sets the pod's phase.

The pure helpers (path rewriting, ``$(VAR)`` expansion, the kwok Stage that reads the
exit code annotation) are tested without a cluster. The ``controlplane`` tests create
pods directly, without the operator, with the trainer's labels, a node selector for the
simulated H100 nodes and a ``python -c`` script as command.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeclip.dev import kwok_config
from kubeclip.trainer.config import TrainerConfig
from tests.support.controlplane import ControlPlane, create_namespace, wait_for
from tests.support.pod_runner import PodRunner, _kubelet_exit_code
from tests.support.pod_workspace import expand_references, rewrite_path
from tests.support.training import make_config

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = {"key": kwok_config.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
PROCESS_TIMEOUT_SECONDS = 60.0

# Prints the files, variables and API access the container receives as one JSON line, then exits with the code in argv[3].
# It reaches the API server with the mounted ServiceAccount token, as the trainer does.
CHECK_SCRIPT = textwrap.dedent(
    """
    import json, os, ssl, sys, urllib.request
    greeting_path, account_dir, exit_code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    api = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/api"
    token = open(os.path.join(account_dir, "token")).read()
    context = ssl.create_default_context(cafile=os.path.join(account_dir, "ca.crt"))
    request = urllib.request.Request(api, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        api_status = response.status
    seen = {
        "greeting": open(greeting_path).read(),
        "greetingFromEnvPath": open(os.environ["GREETING_FILE"]).read(),
        "apiKey": os.environ.get("API_KEY"),
        "sessionTokenSet": "SESSION_TOKEN" in os.environ,
        "podName": os.environ.get("POD_NAME"),
        "podNamespace": os.environ.get("POD_NAMESPACE"),
        "mode": os.environ.get("MODE"),
        "accountDirMatches": os.path.samefile(account_dir, os.environ["KUBECLIP_SERVICE_ACCOUNT_DIR"]),
        "namespaceFile": open(os.path.join(account_dir, "namespace")).read(),
        "apiStatus": api_status,
    }
    print("SEEN " + json.dumps(seen), flush=True)
    sys.exit(exit_code)
    """
)

# Writes a marker into the claim on SIGTERM and exits 75, as the trainer does after its checkpoint.
SLEEP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    marker = os.path.join(sys.argv[1], "marker")
    def on_term(signum, frame):
        with open(marker, "w") as handle:
            handle.write("SIGTERM")
        sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    print("sleeping", flush=True)
    time.sleep(300)
    """
)

# Prints the marker the previous pod of the claim left.
READ_MARKER_SCRIPT = 'import sys; print("MARKER " + open(sys.argv[1] + "/marker").read(), flush=True)'


# -- without a cluster ------------------------------------------------------------------


def test_paths_under_mount_rewritten(tmp_path):
    mounts = {"/etc/kubeclip": tmp_path / "config", "/mnt/output": tmp_path / "claim", "/tmp": tmp_path / "tmp"}

    assert rewrite_path("/etc/kubeclip/trainer.json", mounts) == f"{tmp_path}/config/trainer.json"
    assert rewrite_path("/mnt/output", mounts) == f"{tmp_path}/claim"
    assert rewrite_path("--output=/mnt/output/run", mounts) == f"--output={tmp_path}/claim/run"
    assert rewrite_path("/tmpfiles/x", mounts) == "/tmpfiles/x"
    assert rewrite_path("-m", mounts) == "-m"
    assert rewrite_path("a=/mnt/output", mounts) == "a=/mnt/output"


def test_variable_references_expanded_like_kubelet():
    env = {"OUT": "/mnt/output", "NAME": "job"}

    assert expand_references("$(OUT)/$(NAME)", env) == "/mnt/output/job"
    assert expand_references("$(MISSING)", env) == "$(MISSING)"
    assert expand_references("$$(OUT)", env) == "$(OUT)"


def test_signal_death_reported_as_128_plus_signal():
    assert _kubelet_exit_code(-15) == 143
    assert _kubelet_exit_code(3) == 3
    assert _kubelet_exit_code(0) == 0


def test_failed_stage_reads_exit_code_annotation():
    stages = {stage["metadata"]["name"]: stage for stage in kwok_config.build_stages()}

    template = stages["pod-failed"]["spec"]["next"]["statusTemplate"]
    assert f'"{kwok_config.POD_EXIT_CODE_ANNOTATION}"' in template
    assert "exitCode: {{ atoi . }}" in template
    assert "exitCode: 0\n" in stages["pod-succeeded"]["spec"]["next"]["statusTemplate"]


# -- against the development cluster ----------------------------------------------------


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"runner-{uuid.uuid4().hex[:8]}"
    create_namespace(cluster, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def runner(cluster: ControlPlane, tmp_path: Path) -> Iterator[PodRunner]:
    with PodRunner(cluster, work_dir=tmp_path / "runner", extra_env={"MODE": "pod-runner-test"}) as pod_runner:
        yield pod_runner
        # pytest shows what teardown prints only when the test failed.
        for process in pod_runner.processes:
            print(f"--- log of {process.namespace}/{process.name}\n{pod_runner.log_of(process.name, process.namespace)}")


def trainer_pod(name: str, args: list[str], *, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container = {
        "name": "trainer",
        "image": "kubeclip-trainer:test",
        "command": ["python", "-c"],
        "args": args,
        "env": env or [],
        "volumeMounts": mounts,
        "resources": {"limits": {kwok_config.GPU_RESOURCE: "1"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubeclip-trainer"}},
        "spec": {
            "containers": [container],
            "volumes": volumes,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 20,
            "nodeSelector": {"nvidia.com/gpu.product": H100},
            "tolerations": [GPU_TOLERATION],
        },
    }


def create_check_inputs(plane: ControlPlane, namespace: str) -> None:
    plane.core.create_namespaced_config_map(namespace, {"metadata": {"name": "greeting"}, "data": {"message.txt": "hello from a ConfigMap"}})
    plane.core.create_namespaced_secret(namespace, {"metadata": {"name": "credentials"}, "stringData": {"api-key": "s3cr3t-value"}})


def check_pod(name: str, exit_code: int) -> dict[str, Any]:
    env = [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "api-key"}}},
        {"name": "SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "session-token", "optional": True}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "GREETING_FILE", "value": "/etc/greeting/message.txt"},
    ]
    return trainer_pod(
        name,
        [CHECK_SCRIPT, "/etc/greeting/message.txt", "/var/run/secrets/kubernetes.io/serviceaccount", str(exit_code)],
        volumes=[{"name": "greeting", "configMap": {"name": "greeting"}}],
        mounts=[{"name": "greeting", "mountPath": "/etc/greeting", "readOnly": True}],
        env=env,
    )


def seen_by(runner: PodRunner, pod_name: str) -> dict[str, Any]:
    lines = [line for line in runner.log_of(pod_name).splitlines() if line.startswith("SEEN ")]
    assert lines, runner.log_of(pod_name)
    return json.loads(lines[-1].removeprefix("SEEN "))


def wait_for_phase(plane: ControlPlane, namespace: str, name: str, phase: str) -> client.V1Pod:
    wait_for(lambda: plane.core.read_namespaced_pod(name, namespace).status.phase == phase, f"pod {namespace}/{name} is {phase}")
    return plane.core.read_namespaced_pod(name, namespace)


@pytest.mark.controlplane
def test_exit_zero_makes_pod_succeed(cluster, namespace, runner):
    create_check_inputs(cluster, namespace)
    cluster.core.create_namespaced_pod(namespace, check_pod("check-ok", 0))

    process = runner.wait_ended("check-ok", PROCESS_TIMEOUT_SECONDS)

    pod = wait_for_phase(cluster, namespace, "check-ok", "Succeeded")
    seen = seen_by(runner, "check-ok")
    assert process.exit_code == 0, runner.log_of("check-ok")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert seen["greeting"] == "hello from a ConfigMap"
    assert seen["greetingFromEnvPath"] == "hello from a ConfigMap"
    assert seen["apiKey"] == "s3cr3t-value"
    assert seen["sessionTokenSet"] is False
    assert seen["podName"] == "check-ok"
    assert seen["podNamespace"] == namespace
    assert seen["mode"] == "pod-runner-test"
    assert seen["accountDirMatches"] is True
    assert seen["namespaceFile"] == namespace
    assert seen["apiStatus"] == 200


@pytest.mark.controlplane
def test_exit_three_reported_as_container_exit_code(cluster, namespace, runner):
    create_check_inputs(cluster, namespace)
    cluster.core.create_namespaced_pod(namespace, check_pod("check-fails", 3))

    process = runner.wait_ended("check-fails", PROCESS_TIMEOUT_SECONDS)

    pod = wait_for_phase(cluster, namespace, "check-fails", "Failed")
    assert process.exit_code == 3, runner.log_of("check-fails")
    assert pod.metadata.annotations[kwok_config.POD_EXIT_CODE_ANNOTATION] == "3"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert pod.status.container_statuses[0].state.terminated.reason == "Error"


@pytest.mark.controlplane
def test_missing_secret_waits_until_created(cluster, namespace, runner):
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "greeting"}, "data": {"message.txt": "hello from a ConfigMap"}})
    cluster.core.create_namespaced_pod(namespace, check_pod("check-waits", 0))
    wait_for(lambda: setup_error_of(runner, "check-waits") is not None, "the runner reports the missing Secret")
    assert f"Secret {namespace}/credentials is not found" in setup_error_of(runner, "check-waits")
    assert not runner.find("check-waits").started.is_set()

    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "credentials"}, "stringData": {"api-key": "s3cr3t-value"}})

    process = runner.wait_ended("check-waits", PROCESS_TIMEOUT_SECONDS)
    assert process.exit_code == 0, runner.log_of("check-waits")


@pytest.fixture
def claim(cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """A PersistentVolumeClaim pre-bound to a PersistentVolume, so the scheduler places pods that use it."""
    volume_name = f"{namespace}-output"
    cluster.core.create_persistent_volume({
        "metadata": {"name": volume_name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "hostPath": {"path": f"/kubeclip-test/{volume_name}"},
            "claimRef": {"namespace": namespace, "name": "output"},
        },
    })  # fmt: skip
    cluster.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "output"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume_name, "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip
    yield "output"
    try:
        cluster.core.delete_persistent_volume(volume_name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.mark.controlplane
def test_deleted_pod_gets_sigterm_and_claim_survives(cluster, namespace, runner, claim):
    volumes = [{"name": "output", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "output", "mountPath": "/mnt/output"}]
    cluster.core.create_namespaced_pod(namespace, trainer_pod("sleeper", [SLEEP_SCRIPT, "/mnt/output"], volumes=volumes, mounts=mounts))
    runner.wait_started("sleeper", PROCESS_TIMEOUT_SECONDS)
    wait_for(lambda: "sleeping" in runner.log_of("sleeper"), "the sleeping script installed its SIGTERM handler")

    cluster.core.delete_namespaced_pod("sleeper", namespace)

    process = runner.wait_ended("sleeper", PROCESS_TIMEOUT_SECONDS)
    assert process.exit_code == 75, runner.log_of("sleeper")
    assert (runner.claim_dir(claim) / "marker").read_text() == "SIGTERM"

    # A later pod of the same claim reads the files the first one wrote.
    cluster.core.create_namespaced_pod(namespace, trainer_pod("reader", [READ_MARKER_SCRIPT, "/mnt/output"], volumes=volumes, mounts=mounts))
    reader = runner.wait_ended("reader", PROCESS_TIMEOUT_SECONDS)
    assert reader.exit_code == 0, runner.log_of("reader")
    assert "MARKER SIGTERM" in runner.log_of("reader")


@pytest.mark.controlplane
def test_runner_ignores_pods_without_trainer_label(cluster, namespace, runner):
    pod = check_pod("unlabelled", 0)
    pod["metadata"]["labels"] = {}
    create_check_inputs(cluster, namespace)
    cluster.core.create_namespaced_pod(namespace, pod)
    labelled = check_pod("labelled", 0)
    cluster.core.create_namespaced_pod(namespace, labelled)

    wait_for_phase(cluster, namespace, "unlabelled", "Running")
    runner.wait_ended("labelled", PROCESS_TIMEOUT_SECONDS)

    assert runner.find("unlabelled") is None
    assert cluster.core.read_namespaced_pod("unlabelled", namespace).status.phase == "Running"


WORKLOAD = "job-0a1b2c3d"
TRAINER_POD = f"{WORKLOAD}-x7k2p"


def create_trainer_pod(plane: ControlPlane, namespace: str, config: TrainerConfig) -> None:
    """Create what the operator creates for one job (identity, config, empty progress ConfigMap) and the trainer pod."""
    create_trainer_identity(plane, namespace, WORKLOAD)
    plane.core.create_namespaced_config_map(namespace, {"metadata": {"name": f"{WORKLOAD}-config"}, "data": {"trainer.json": json.dumps(config.to_dict())}})
    plane.core.create_namespaced_config_map(namespace, {"metadata": {"name": f"{WORKLOAD}-progress", "labels": {"app.kubernetes.io/name": "kubeclip-trainer"}}})
    env = [
        {"name": "KUBECLIP_PROGRESS_CONFIGMAP", "value": f"{WORKLOAD}-progress"},
        {"name": "KUBECLIP_PROGRESS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBECLIP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KUBECLIP_PROGRESS_INTERVAL_SECONDS", "value": "1"},
    ]
    pod = trainer_pod(
        TRAINER_POD, [], env=env,
        volumes=[{"name": "config", "configMap": {"name": f"{WORKLOAD}-config"}}],
        mounts=[{"name": "config", "mountPath": "/etc/kubeclip", "readOnly": True}],
    )  # fmt: skip
    pod["spec"].update(serviceAccountName=WORKLOAD, automountServiceAccountToken=True)
    pod["spec"]["containers"][0].update(command=["python", "-m", "kubeclip.trainer", "--config", "/etc/kubeclip/trainer.json"], args=[])
    plane.core.create_namespaced_pod(namespace, pod)


def read_progress(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    data = plane.core.read_namespaced_config_map(f"{WORKLOAD}-progress", namespace).data or {}
    return json.loads(data.get("progress.json", "{}"))


@pytest.mark.controlplane
def test_trainer_pod_reports_success(cluster, namespace, runner, tinted_zip, tmp_path):
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"max_steps": 4})
    create_trainer_pod(cluster, namespace, config)

    process = runner.wait_ended(TRAINER_POD, 300)

    assert process.exit_code == 0, runner.log_of(TRAINER_POD)
    wait_for_phase(cluster, namespace, TRAINER_POD, "Succeeded")
    progress = read_progress(cluster, namespace)
    assert progress["state"] == "Succeeded"
    assert progress["pod"] == TRAINER_POD
    assert progress["totalSteps"] == 4
    assert progress["modelUri"] == str(tmp_path / "out" / "model")


@pytest.mark.controlplane
def test_deleted_trainer_pod_reports_interrupted(cluster, namespace, runner, tinted_zip, tmp_path):
    config = make_config(tinted_zip, tmp_path / "out", tmp_path / "cache", optimization={"epochs": 200}, schedule={"eval_steps": 1000, "save_steps": 1000})
    create_trainer_pod(cluster, namespace, config)
    wait_for(lambda: read_progress(cluster, namespace).get("step", 0) >= 2, "the trainer reports step 2", timeout=300)

    cluster.core.delete_namespaced_pod(TRAINER_POD, namespace)

    process = runner.wait_ended(TRAINER_POD, 120)
    progress = read_progress(cluster, namespace)
    assert process.exit_code == 75, runner.log_of(TRAINER_POD)
    assert progress["state"] == "Interrupted"
    assert progress["checkpoints"][-1]["step"] >= 2
    assert (tmp_path / "out" / "checkpoints" / progress["checkpoints"][-1]["name"]).is_dir()


def create_trainer_identity(plane: ControlPlane, namespace: str, workload: str) -> None:
    """Create the ServiceAccount, Role and RoleBinding that the operator creates for a job."""
    rbac = client.RbacAuthorizationV1Api(plane.api_client)
    plane.core.create_namespaced_service_account(namespace, {"metadata": {"name": workload}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [f"{workload}-progress"], "verbs": ["get", "patch", "update"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": workload}, "rules": [rule]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": workload},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": workload},
        "subjects": [{"kind": "ServiceAccount", "name": workload, "namespace": namespace}],
    })  # fmt: skip


def setup_error_of(runner: PodRunner, pod_name: str) -> str | None:
    record = runner.find(pod_name)
    return record.setup_error if record is not None else None
