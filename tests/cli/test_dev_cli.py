"""``kubeclip dev run-pods``: its options, defaults and refusals, without a cluster.

tests/devcluster/test_run_pods_command.py runs the command against a real cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeclip.cli import dev as dev_cli
from kubeclip.cli.main import build_parser, main
from kubeclip.dev import DEFAULT_CLUSTER_NAME
from kubeclip.dev import cluster as dev_cluster
from kubeclip.dev.components import ClusterPorts
from kubeclip.dev.processes import ProcessRecord


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty kubeclip cache, so no cluster of the developer's is found."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KUBECLIP_CACHE_DIR", str(cache))
    return cache


def stored_state(data_dir: Path, apiserver: ProcessRecord) -> dev_cluster.ClusterState:
    """Write and return the state file of cluster ``demo`` whose only process is ``apiserver``."""
    data_dir.mkdir(parents=True)
    state = dev_cluster.ClusterState("demo", data_dir, ClusterPorts(2379, 2380, 6443, 10257, 10259, 10247), (apiserver,))
    state.save()
    return state


def test_run_pods_defaults():
    args = build_parser().parse_args(["dev", "run-pods"])

    assert args.name == DEFAULT_CLUSTER_NAME
    assert args.data_dir is None
    assert args.work_dir is None
    assert args.handler is dev_cli.run_pods_command


def test_run_pods_options_parsed(tmp_path: Path):
    args = build_parser().parse_args(["dev", "run-pods", "--name", "demo", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "pods")])

    assert args.name == "demo"
    assert args.data_dir == tmp_path / "data"
    assert args.work_dir == tmp_path / "pods"


def test_run_pods_rejects_unknown_option(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["dev", "run-pods", "--workdir", "pods"])

    assert exit_info.value.code == 2
    assert "unrecognized arguments: --workdir" in capsys.readouterr().err


def test_default_work_dir_outlives_cluster_data(cache_dir: Path):
    work_dir = dev_cli.default_work_dir("demo")

    assert work_dir == cache_dir / "pods" / "demo"
    assert not work_dir.is_relative_to(dev_cluster.default_data_dir("demo"))


def test_run_pods_without_cluster_names_fix(cache_dir: Path, capsys: pytest.CaptureFixture[str]):
    exit_code = main(["dev", "run-pods", "--name", "demo"])

    assert exit_code == dev_cli.EXIT_FAILED
    error = capsys.readouterr().err
    assert "error: cluster 'demo' is not running (it has no state)" in error
    assert "kubeclip dev cluster up --name demo" in error
    assert not (cache_dir / "pods").exists()


def test_run_pods_with_exited_apiserver_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # This test's own PID with start ticks no process has: a record of a process that has exited.
    exited = ProcessRecord("kube-apiserver", os.getpid(), -1, str(tmp_path / "kube-apiserver.log"), ("kube-apiserver",))
    stored_state(tmp_path / "data", exited)

    exit_code = main(["dev", "run-pods", "--name", "demo", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "pods")])

    assert exit_code == dev_cli.EXIT_FAILED
    error = capsys.readouterr().err
    assert "error: cluster 'demo' is not running (kube-apiserver has exited" in error
    assert "kubeclip dev cluster up --name demo" in error
    assert not (tmp_path / "pods").exists()


def test_stopped_cluster_check_accepts_running_apiserver(tmp_path: Path):
    from kubeclip.dev.processes import read_start_ticks

    running = ProcessRecord("kube-apiserver", os.getpid(), read_start_ticks(os.getpid()), str(tmp_path / "kube-apiserver.log"), ("python",))
    state = stored_state(tmp_path / "data", running)

    assert dev_cli.describe_stopped_cluster(state, "demo") is None


def test_runner_environment_and_grace(tmp_path: Path):
    exited = ProcessRecord("kube-apiserver", os.getpid(), -1, str(tmp_path / "kube-apiserver.log"), ("kube-apiserver",))
    state = stored_state(tmp_path / "data", exited)

    runner = dev_cli.build_pod_runner(state, tmp_path / "pods")

    assert runner.extra_env == {"KUBECLIP_METRICS_PORT": "0"}
    assert runner.stop_grace_seconds == 120.0
    assert runner.work_dir == tmp_path / "pods"
    assert runner.kubeconfig == tmp_path / "data" / "admin.kubeconfig"
    assert (runner.api_server.host, runner.api_server.port) == ("127.0.0.1", 6443)
    assert runner.api_server.ca_certificate == state.layout.pki.ca_certificate
