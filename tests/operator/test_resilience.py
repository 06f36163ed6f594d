"""The operator and its trainers survive what clusters do to them: an API server restart,
a watch that goes silent, and a node that is drained under a running trainer.

These tests disturb the shared control plane, so they run after the other operator
tests of the package (pytest runs the modules in name order) and leave it healthy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kubeclip.dev import cluster as dev_cluster
from tests.operator.conftest import create_job, events_of, has_condition, training_job
from tests.operator.test_operator_e2e import trainer_pods, wait_job
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.objectstores import S3Server
from tests.support.operator_process import OperatorProcess
from tests.support.pod_runner import PodRunner
from tests.support.stalling_proxy import StallingProxy

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

#: Seconds a watch may stay silent before the operator replaces it, for the quiet-watch test.
QUIET_WATCH_TIMEOUT_SECONDS = 10
DRAIN_TAINT = {"key": "kubeclip.dev/drain-test", "value": "true", "effect": "NoExecute"}


def test_job_survives_api_server_restart(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    create_job(plane, training_job("steady", namespace, bucket, epochs=6))
    wait_job(plane, namespace, "steady", lambda job: has_condition(job, "Running"), "Running")

    dev_cluster.restart_component(dev_cluster.load_state(plane.name, plane.state.data_dir), "kube-apiserver")

    job = wait_job(plane, namespace, "steady", lambda job: has_condition(job, "Succeeded"), "Succeeded after the restart")
    assert job["status"]["progress"]["step"] == job["status"]["progress"]["totalSteps"]
    # A job created after the restart shows that the operator's watch of jobs came back.
    create_job(plane, training_job("after-restart", namespace, bucket, epochs=1))
    wait_job(plane, namespace, "after-restart", lambda job: has_condition(job, "Succeeded"), "Succeeded")


def test_silent_watch_is_replaced(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server, tmp_path: Path) -> None:
    plane: ControlPlane = home["plane"]
    operator.stop()
    try:
        with StallingProxy(plane.state.ports.apiserver) as proxy:
            document = yaml.safe_load(home["kubeconfig"].read_text())
            document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
            proxied = tmp_path / "proxied.kubeconfig"
            proxied.write_text(yaml.safe_dump(document))
            os.environ["KUBECLIP_OPERATOR_WATCH_TIMEOUT_SECONDS"] = str(QUIET_WATCH_TIMEOUT_SECONDS)
            try:
                quiet = OperatorProcess(proxied, tmp_path / "operator.log").start()
            finally:
                del os.environ["KUBECLIP_OPERATOR_WATCH_TIMEOUT_SECONDS"]
            try:
                create_job(plane, training_job("before-silence", namespace, bucket, epochs=1))
                wait_job(plane, namespace, "before-silence", lambda job: has_condition(job, "Scheduled"), "Scheduled through the proxy")
                assert proxy.stall() > 0

                # Only a new watch can see this job: every connection open before it is silent. With
                # the default watch timeout (120 s) the operator would not notice within this wait.
                create_job(plane, training_job("after-silence", namespace, bucket, epochs=1))
                wait_job(plane, namespace, "after-silence", lambda job: has_condition(job, "Succeeded"), "Succeeded", timeout=100)
            finally:
                quiet.stop()
    finally:
        operator.start()


def test_drained_node_moves_trainer_and_resumes(home, operator: OperatorProcess, runner: PodRunner, namespace: str, bucket: S3Server) -> None:
    plane: ControlPlane = home["plane"]
    created = create_job(plane, training_job("moved", namespace, bucket, gpu="H100", epochs=6))
    uid = created["metadata"]["uid"]
    job = wait_job(plane, namespace, "moved", lambda job: bool((job.get("status") or {}).get("checkpoints")), "a checkpoint is reported")
    first_node = job["status"]["nodeName"]
    node = plane.core.read_node(first_node)
    taints = [*(node.spec.taints or []), DRAIN_TAINT]
    plane.core.patch_node(first_node, {"spec": {"taints": taints}})
    try:
        job = wait_job(plane, namespace, "moved", lambda job: has_condition(job, "Succeeded"), "Succeeded on another node")
    finally:
        remaining = [taint for taint in plane.core.read_node(first_node).spec.taints or [] if taint.key != DRAIN_TAINT["key"]]
        plane.core.patch_node(first_node, {"spec": {"taints": [client.ApiClient().sanitize_for_serialization(taint) for taint in remaining]}})

    assert job["status"]["nodeName"] != first_node
    assert job["status"]["failedAttempts"] == 0, "an eviction must not count against spec.backoffLimit"
    pods = trainer_pods(plane, namespace, uid)
    assert len(pods) == 1, "the evicted pod is gone and one replacement ran"
    assert "resum" in runner.log_of(pods[0].metadata.name).lower()
    assert any(event.reason == "TrainerRunning" for event in events_of(plane, namespace, "moved"))
