"""The ``kubeclip`` command: one subcommand per module, one clear error line on failure."""

from __future__ import annotations

import argparse
import os
import sys

# Idle OpenMP threads spin by default. With data loader workers on a few cores they
# steal the training process's time: 65 against 7 samples/s measured on 2 cores
# (docs/benchmarks.md). It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kubeclip import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeclip", description="Fine-tune CLIP-style image-text dual encoders.")
    parser.add_argument("--version", action="version", version=f"kubeclip {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from kubeclip.cli import dataset, dev, operator, train

    train.register(subparsers)
    dataset.register(subparsers)
    dev.register(subparsers)
    operator.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
