"""Entry point of the trainer in a pod: ``python -m kubeclip.trainer --config FILE``.

The exit code tells whether a retry can help (see ``kubeclip.trainer.errors.ExitCode``).
"""

from __future__ import annotations

import argparse
import os
import logging
import sys

# Idle OpenMP threads spin by default. With data loader workers on a few cores they
# steal the training process's time: 65 against 7 samples/s measured on 2 cores
# (docs/benchmarks.md). It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import ExitCode, TrainerError
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
        return int(err.exit_code)
    configure_logging(config.job)
    return run_and_report(config)


def run_and_report(config: TrainerConfig) -> int:
    """Run the training; log a failure once with its reason and return the exit code."""
    from kubeclip.trainer.run import run_training

    try:
        run_training(config)
    except TrainerError as err:
        logger.error(str(err), extra={"reason": type(err).__name__, "exit_code": int(err.exit_code)})
        return int(err.exit_code)
    except Exception:
        logger.exception("training failed with an unexpected error")
        return int(ExitCode.FAILED)
    return int(ExitCode.SUCCEEDED)


if __name__ == "__main__":
    sys.exit(main())
