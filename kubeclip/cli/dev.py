"""The ``kubeclip dev`` subcommands: ``cluster up|status|down`` and ``build``.

``kubeclip.cli.main`` calls ``register`` to add them to its parser. The handlers call
``kubeclip.dev.cluster`` and ``kubeclip.dev.binaries``, print progress as log lines on
stderr and results on stdout, and return the process exit code. ``cluster up`` prints the
admin kubeconfig's path as the last line of stdout, so scripts can capture it with
``tail -n 1``. ``kubeclip.dev.cluster`` is imported inside the handlers because the
Kubernetes client takes most of a second to import and other subcommands do not need it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kubeclip.dev import DEFAULT_CLUSTER_NAME, binaries

if TYPE_CHECKING:
    from kubeclip.dev.cluster import ClusterStatus

EXIT_OK = 0
EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dev cluster up|status|down`` and ``dev build`` to a parser's subcommands."""
    dev_parser = subparsers.add_parser("dev", help="Run a local Kubernetes control plane with simulated GPU nodes.")
    dev_commands = dev_parser.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    cluster_parser = dev_commands.add_parser("cluster", help="Start, inspect or stop a development cluster.")
    cluster_commands = cluster_parser.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    _add_up_parser(cluster_commands)
    _add_status_parser(cluster_commands)
    _add_down_parser(cluster_commands)
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
