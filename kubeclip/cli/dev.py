"""The ``kubeclip dev`` subcommands: ``cluster up|status|down``, ``run-pods`` and ``build``.

``kubeclip.cli.main`` calls ``register`` to add them to its parser. The handlers call
``kubeclip.dev.cluster``, ``kubeclip.dev.pod_runner`` and ``kubeclip.dev.binaries``, print
progress as log lines on stderr and results on stdout, and return the process exit code.
``cluster up`` prints the admin kubeconfig's path as the last line of stdout, so scripts
can capture it with ``tail -n 1``. ``kubeclip.dev.cluster`` and ``kubeclip.dev.pod_runner``
are imported inside the handlers because the Kubernetes client takes most of a second to
import and other subcommands do not need it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from kubeclip.dev import DEFAULT_CLUSTER_NAME, binaries

if TYPE_CHECKING:
    from kubeclip.dev.cluster import ClusterState, ClusterStatus
    from kubeclip.dev.pod_runner import PodRunner

EXIT_OK = 0
EXIT_FAILED = 1
#: Variables that ``run-pods`` gives every trainer. Port 0 lets each trainer's metrics
#: server pick a free port, so several trainers run side by side on one host.
#: NOTE: the metrics server still binds the address in the pod's trainer.json, 0.0.0.0,
#: because the trainer reads no variable for it; add one to keep local runs on 127.0.0.1.
RUN_PODS_ENVIRONMENT = {"KUBECLIP_METRICS_PORT": "0"}
#: Seconds ``run-pods`` waits after SIGTERM before it kills a trainer. It is the
#: terminationGracePeriodSeconds that the operator gives trainer pods by default
#: (``OperatorSettings.termination_grace_seconds``), so a trainer has as long to write its
#: checkpoint as in a cluster.
RUN_PODS_STOP_GRACE_SECONDS = 120.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dev cluster up|status|down``, ``dev run-pods`` and ``dev build`` to a parser's subcommands."""
    dev_parser = subparsers.add_parser("dev", help="Run a local Kubernetes control plane with simulated GPU nodes.")
    dev_commands = dev_parser.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    cluster_parser = dev_commands.add_parser("cluster", help="Start, inspect or stop a development cluster.")
    cluster_commands = cluster_parser.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    _add_up_parser(cluster_commands)
    _add_status_parser(cluster_commands)
    _add_down_parser(cluster_commands)
    _add_run_pods_parser(dev_commands)
    _add_build_parser(dev_commands)


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_CLUSTER_NAME, help=f"cluster name; clusters with different names run side by side (default: {DEFAULT_CLUSTER_NAME})")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="folder for certificates, etcd data, kubeconfigs and logs (default: ~/.cache/kubeclip/clusters/NAME)")


def _add_up_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "up",
        help="Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1.",
        description="Build missing binaries (the first build takes tens of minutes), start the cluster, register simulated GPU "
        "and CPU nodes and wait until they are Ready. The last line of output is the admin kubeconfig's path.",
    )
    _add_cluster_arguments(parser)
    parser.set_defaults(handler=run_up_command)


def _add_status_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("status", help="Show each component's process and health, and the nodes. Exit code 1 when anything is unhealthy.")
    _add_cluster_arguments(parser)
    parser.set_defaults(handler=run_status_command)


def _add_down_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("down", help="Stop every process of the cluster and remove its data folder.")
    _add_cluster_arguments(parser)
    parser.add_argument("--keep-data", action="store_true", help="keep the data folder (logs, etcd data, kubeconfigs) for inspection")
    parser.set_defaults(handler=run_down_command)


def _add_run_pods_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run-pods",
        help="Run the trainer pods of the simulated GPU nodes as local processes, until Ctrl-C.",
        description="kwok simulates the cluster's nodes without a container runtime, so no trainer pod on them would ever run. "
        "This command plays the container runtime in the foreground: it watches the pods labelled "
        "app.kubernetes.io/name=kubeclip-trainer that are bound to simulated nodes and runs each one's command as a local "
        "process of this Python, with the pod's environment and with local folders for its ConfigMap, Secret, emptyDir and "
        "ServiceAccount token mounts. Each PersistentVolumeClaim becomes the folder WORK_DIR/pvc/CLAIM, shared by all "
        "pods. The exit code of a process becomes the pod's. Ctrl-C or SIGTERM sends SIGTERM to the running trainers, "
        f"which save a checkpoint, and kills those still running after {RUN_PODS_STOP_GRACE_SECONDS:.0f} s.",
    )
    _add_cluster_arguments(parser)
    parser.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="folder for the pods' files, their logs (logs/NAMESPACE_POD.log) and the claims' folders (pvc/CLAIM); "
        "it outlives `cluster down` (default: ~/.cache/kubeclip/pods/NAME)",
    )
    parser.set_defaults(handler=run_pods_command)


def _add_build_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("build", help="Build and cache the control-plane binaries, kubectl and helm without starting anything.")
    parser.add_argument("components", nargs="*", metavar="COMPONENT", help=f"components to build (default: all of {', '.join(binaries.COMPONENTS)})")
    parser.set_defaults(handler=run_build_command)


def run_up_command(args: argparse.Namespace) -> int:
    """Start the cluster and print its kubeconfig path last."""
    from kubeclip.dev import cluster

    _configure_logging()
    try:
        state = cluster.up(args.name, args.data_dir)
    except (cluster.ClusterError, binaries.BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"cluster {state.name}: kube-apiserver at {state.server}, logs in {state.layout.logs}")
    print(state.kubeconfig)
    return EXIT_OK


def run_status_command(args: argparse.Namespace) -> int:
    """Print the health of every component and node."""
    from kubeclip.dev import cluster

    try:
        report = cluster.status(args.name, args.data_dir)
    except cluster.ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(format_status(report))
    return EXIT_OK if report.healthy else EXIT_FAILED


def run_down_command(args: argparse.Namespace) -> int:
    """Stop the cluster; report when there was nothing to stop."""
    from kubeclip.dev import cluster

    _configure_logging()
    if not cluster.down(args.name, args.data_dir, keep_data=args.keep_data):
        print(f"cluster {args.name} has no state; nothing to stop")
        return EXIT_OK
    print(f"cluster {args.name} stopped" + (", data kept" if args.keep_data else ", data removed"))
    return EXIT_OK


def run_pods_command(args: argparse.Namespace) -> int:
    """Run the trainer pods of the cluster's simulated nodes as local processes until Ctrl-C or SIGTERM."""
    from kubeclip.dev import cluster

    _configure_logging()
    state = cluster.load_state(args.name, args.data_dir)
    problem = describe_stopped_cluster(state, args.name)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    work_dir = (args.work_dir or default_work_dir(args.name)).absolute()
    runner = build_pod_runner(state, work_dir)

    # The handlers go in before the runner starts, so a signal at any later point stops the trainers it started.
    previous_handlers = {number: signal.signal(number, _raise_stop_requested) for number in _STOP_SIGNALS}
    try:
        with runner:
            logger.info("running the trainer pods of cluster %s as local processes; logs in %s; Ctrl-C stops", state.name, work_dir / "logs")
            while True:
                signal.pause()
    except _StopRequested:
        pass
    finally:
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
    logger.info("stopped; every trainer process has ended")
    return EXIT_OK


def build_pod_runner(state: ClusterState, work_dir: Path) -> PodRunner:
    """Return the pod runner of ``run-pods`` for cluster ``state``, with the trainers' variables and stop grace period."""
    from kubeclip.dev.pod_runner import PodRunner

    return PodRunner.for_cluster(state, work_dir=work_dir, extra_env=dict(RUN_PODS_ENVIRONMENT), stop_grace_seconds=RUN_PODS_STOP_GRACE_SECONDS)


def default_work_dir(name: str) -> Path:
    """Return the work folder of ``run-pods`` for cluster ``name`` when no --work-dir is given.

    It lies outside the cluster's data folder, which ``cluster down`` removes, so trained
    models and checkpoints in the claims' folders outlive the cluster.
    """
    return binaries.cache_root() / "pods" / name


def describe_stopped_cluster(state: ClusterState | None, name: str) -> str | None:
    """Return why cluster ``name`` cannot serve ``run-pods`` (no state, or its API server has exited), or None when it runs."""
    from kubeclip.dev import processes

    hint = f"start it with `kubeclip dev cluster up --name {name}`"
    if state is None:
        return f"cluster {name!r} is not running (it has no state); {hint}"
    apiserver = next((record for record in state.processes if record.name == "kube-apiserver"), None)
    if apiserver is None or not processes.is_running(apiserver):
        return f"cluster {name!r} is not running (kube-apiserver has exited; logs in {state.layout.logs}); {hint}"
    return None


class _StopRequested(Exception):
    """Ctrl-C or SIGTERM asked ``run-pods`` to stop."""


def _raise_stop_requested(signal_number: int, _frame: FrameType | None) -> None:
    # Later signals only log, so a second Ctrl-C cannot interrupt the trainers' checkpoints.
    for number in _STOP_SIGNALS:
        signal.signal(number, _log_stop_in_progress)
    logger.info("%s received; stopping the trainers, which save a checkpoint first", signal.Signals(signal_number).name)
    raise _StopRequested


def _log_stop_in_progress(signal_number: int, _frame: FrameType | None) -> None:
    logger.info("%s received; already stopping, waiting for the trainers to save their checkpoints", signal.Signals(signal_number).name)


def run_build_command(args: argparse.Namespace) -> int:
    """Build the requested binaries and print where each one is."""
    _configure_logging()
    return binaries.main(list(args.components))


def format_status(report: ClusterStatus) -> str:
    """Return the text that ``cluster status`` prints: one line per component and per node."""
    lines = [f"cluster {report.state.name}: {report.state.server}, kubeconfig {report.state.kubeconfig}", "COMPONENT                PID      PROCESS   HEALTH"]
    for component in report.components:
        process_text = "running" if component.running else "exited"
        probes = ", ".join(f"{result.url.rsplit('/', 1)[-1]}={'ok' if result.healthy else result.detail}" for result in component.probes) or "-"
        lines.append(f"{component.name:<24} {component.pid:<8} {process_text:<9} {probes}")
    lines.append("NODE                 READY  GPUS  GPU PRODUCT")
    if report.nodes_error is not None:
        lines.append(f"(listing nodes failed: {report.nodes_error})")
    for node in report.nodes:
        lines.append(f"{node.name:<20} {'yes' if node.ready else 'no':<6} {node.gpus:<5} {node.gpu_product}")
    return "\n".join(lines)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
