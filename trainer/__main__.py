"""Entry point of the trainer in a pod: ``python -m kubeclip.trainer --config FILE``.

The exit code tells whether a retry can help (see ``kubeclip.trainer.errors.ExitCode``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import logging
import sys

# Idle OpenMP threads spin by default. With data loader workers on a few cores they
# steal the training process's time: 65 against 7 samples/s measured on 2 cores
# (docs/benchmarks.md). It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Mapping
from pathlib import Path

from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import ExitCode, TrainerError
from kubeclip.trainer.progress import ProgressReport, open_progress_report
from kubeclip.trainer.reporting import configure_logging

logger = logging.getLogger("kubeclip.trainer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeclip.trainer", description="Run one training from a trainer config file.")
    parser.add_argument("--config", type=Path, required=True, help="JSON trainer config written by the operator's builder.")
    args = parser.parse_args(argv)
    try:
        config = TrainerConfig.from_file(args.config)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        _report_end(open_progress_report(None), err, int(err.exit_code))
        return int(err.exit_code)
    try:
        config = with_environment_overrides(config, os.environ)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    configure_logging(config.job)
    return run_and_report(config)


def with_environment_overrides(config: TrainerConfig, environ: Mapping[str, str]) -> TrainerConfig:
    """Replace the paths and port that depend on where the trainer runs, when their variables are set.

    The operator's pod sets KUBECLIP_OUTPUT_LOCATION and KUBECLIP_CACHE_DIR to the same
    values as the config file. Keeping them in variables lets a runner that maps the pod's
    mounts to other folders, or runs several trainers on one host, move them
    (KUBECLIP_METRICS_PORT=0 picks a free port).
    """
    output, runtime = config.output, config.runtime
    if environ.get("KUBECLIP_OUTPUT_LOCATION"):
        output = dataclasses.replace(output, location=environ["KUBECLIP_OUTPUT_LOCATION"])
    if environ.get("KUBECLIP_CACHE_DIR"):
        runtime = dataclasses.replace(runtime, cache_dir=environ["KUBECLIP_CACHE_DIR"])
    if environ.get("KUBECLIP_METRICS_PORT"):
        port = environ["KUBECLIP_METRICS_PORT"]
        if not port.isdigit() or int(port) > 65535:
            raise ValueError(f"KUBECLIP_METRICS_PORT={port!r} is not a port; set a number from 0 (any free port) to 65535")
        runtime = dataclasses.replace(runtime, metrics_port=int(port))
    return dataclasses.replace(config, output=output, runtime=runtime)


def run_and_report(config: TrainerConfig) -> int:
    """Run the training; log a failure once with its reason, report the end to the progress ConfigMap, and return the exit code."""
    from kubeclip.trainer.run import run_training

    progress = open_progress_report(config)
    try:
        result = run_training(config, sinks=[progress] if progress is not None else [])
    except TrainerError as err:
        # A stop request (suspension, eviction, Ctrl-C) ends the run as planned, with a checkpoint: not an error.
        level = logging.WARNING if err.exit_code == ExitCode.INTERRUPTED else logging.ERROR
        logger.log(level, str(err), extra={"reason": type(err).__name__, "exit_code": int(err.exit_code)})
        return _report_end(progress, err, int(err.exit_code))
    except Exception as err:
        logger.exception("training failed with an unexpected error")
        return _report_end(progress, err, int(ExitCode.FAILED))
    if progress is not None:
        progress.finish_succeeded(result.model_location)
        progress.close()
    return int(ExitCode.SUCCEEDED)


def _report_end(progress: ProgressReport | None, error: Exception, exit_code: int) -> int:
    """Publish the failure (or interruption) once and wait for the write; return ``exit_code``."""
    if progress is not None:
        progress.finish_failed(error, exit_code)
        progress.close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
