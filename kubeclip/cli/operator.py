"""``kubeclip operator``: run the ClipTrainingJob operator against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kubeclip.operator.settings import OperatorSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = OperatorSettings()
    parser = subparsers.add_parser(
        "operator",
        help="run the ClipTrainingJob operator",
        description="Run the operator that turns ClipTrainingJobs into trainer pods on GPU nodes. Every option can also be "
        "set as KUBECLIP_OPERATOR_<OPTION> (for example KUBECLIP_OPERATOR_TRAINER_IMAGE).",
    )
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig of the home cluster. Default: in-cluster credentials, else $KUBECONFIG or ~/.kube/config.")
    parser.add_argument("--namespace", action="append", dest="namespaces", metavar="NS", help="watch only this namespace (repeatable). Default: all.")
    parser.add_argument("--trainer-image", help=f"image of the trainer pods (default {defaults.trainer_image})")
    parser.add_argument("--image-pull-policy", choices=["Always", "IfNotPresent", "Never"], help="pull policy of the trainer image")
    parser.add_argument("--default-cluster", help=f"ClipCluster of Managed jobs without a clusterRef (default {defaults.default_cluster})")
    parser.add_argument("--metrics-port", type=int, help=f"port of /metrics (default {defaults.metrics_port})")
    parser.add_argument("--health-port", type=int, help=f"port of /healthz (default {defaults.health_port})")
    parser.add_argument("--bind-address", help=f"address the metrics and health servers listen on (default {defaults.bind_address})")
    parser.add_argument("--resync-seconds", type=float, help=f"seconds between reconciliations of an unchanged job (default {defaults.resync_seconds:g})")
    parser.add_argument("--node-lost-toleration-seconds", type=int, help=f"seconds a trainer stays on a lost node before it is moved (default {defaults.node_lost_toleration_seconds})")
    parser.add_argument("--log-format", choices=["text", "json"], help="log line format (default text)")
    parser.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    """Defaults, then KUBECLIP_OPERATOR_* variables, then command-line options."""
    settings = OperatorSettings().with_environment()
    changes = {}
    for field in dataclasses.fields(OperatorSettings):
        value = getattr(args, field.name, None)
        if value is not None:
            changes[field.name] = tuple(value) if field.name == "namespaces" else value
    return dataclasses.replace(settings, **changes)


def run(args: argparse.Namespace) -> int:
    from kubeclip.operator.runner import run as run_operator

    try:
        settings = settings_from(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_operator(settings, args.kubeconfig)
