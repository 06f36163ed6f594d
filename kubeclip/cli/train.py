"""``kubeclip train JOB.yaml``: run a ClipTrainingJob's trainer on this machine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kubeclip.api.loading import InvalidJobError, load_job_file
from kubeclip.api.recommendations import resolve_settings
from kubeclip.builders.trainer_config import build_trainer_config
from kubeclip.trainer.config import RuntimeConfig
from kubeclip.trainer.errors import ExitCode, TrainerError

logger = logging.getLogger("kubeclip.cli")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="Train locally from a ClipTrainingJob manifest.", description=__doc__)
    parser.add_argument("job", type=Path, help="ClipTrainingJob YAML file, the same one you would `kubectl apply`.")
    parser.add_argument("--output", help="Output directory or s3:// / gs:// prefix. Default: spec.output.storageUri, else ./runs/EXPERIMENT.")
    parser.add_argument("--metrics-port", type=int, default=9400, help="Port of the Prometheus metrics endpoint; 0 disables it. Default: 9400.")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="Address the metrics endpoint binds to. Default: 127.0.0.1.")
    parser.add_argument("--cache-dir", default="~/.cache/kubeclip", help="Folder for downloaded datasets and models. Default: ~/.cache/kubeclip.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N. Default: auto (CUDA when available).")
    parser.add_argument("--json-logs", action="store_true", help="Write logs as JSON lines even on a terminal.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    parser.set_defaults(handler=run_train_command)


def run_train_command(args: argparse.Namespace) -> int:
    """Validate the job file, resolve its settings, train, and print the summary."""
    from kubeclip.trainer.reporting import configure_logging
    from kubeclip.trainer.run import run_training

    try:
        job = load_job_file(args.job)
        settings = resolve_settings(job)
    except (InvalidJobError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)

    output = args.output or job.spec.output.storage_uri or str(Path("runs") / (job.spec.experiment_name or job.metadata.name))
    problem = _local_run_problem(job, output)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    runtime = RuntimeConfig(
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        cache_dir=args.cache_dir,
        device=args.device,
        progress_bar=not args.no_progress,
    )
    config = build_trainer_config(job, settings, output_location=output, runtime=runtime)
    configure_logging(config.job, json_lines=True if args.json_logs else None)
    logger.info("resolved settings", extra=settings.to_status())
    if job.spec.infrastructure is not None:
        logger.info("infrastructure settings apply in a cluster only; training on this machine", extra={"gpu_type": job.spec.infrastructure.gpu_type.value})

    try:
        result = run_training(config)
    except TrainerError as err:
        logger.error(str(err), extra={"reason": type(err).__name__})
        print(f"error: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        # A second Ctrl-C stops at once, without the checkpoint that the first one requests.
        print("error: interrupted; the newest complete checkpoint is kept", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    print(format_summary(result.figures, result.output_dir))
    return int(ExitCode.SUCCEEDED)


def _local_run_problem(job, output: str) -> str | None:
    """Say why a job cannot train on this machine as written, or return None."""
    if job.spec.dataset.source is None:
        return (
            f"spec.dataset.datasetRef {job.spec.dataset.dataset_ref.name!r} names a ClipDataset, which exists only in a cluster; "
            "for a local run set spec.dataset.source.uri to the dataset's location"
        )
    if output.startswith("pvc://"):
        return f"output {output!r} is a PersistentVolumeClaim, which exists only in a cluster; pass --output DIR for a local run"
    return None


def format_summary(figures: dict, output_dir: Path) -> str:
    """Render the end-of-run table: loss and recall before and after training, for each split."""
    rows = [("split", "figure", "before", "after", "chance")]
    for split in ("validation", "train"):
        before = figures.get(f"baseline_{split}") or {}
        after = figures[f"final_{split}"]
        images = int(after["images"])
        for key in ("loss", "text_to_image_r1", "text_to_image_r5", "image_to_text_r1", "image_to_text_r5"):
            chance = _chance_text(key, after, images)
            rows.append((f"{split} ({images} images)", key, _number(before.get(key)), _number(after[key]), chance))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    footer = [
        "",
        f"steps: {figures['steps']}   precision: {figures['precision']}   time: {figures['seconds']} s",
        f"model: {figures['model_location']}",
        f"curves: {output_dir / 'training_curves.png'}   history: {output_dir / 'metrics.jsonl'}",
        "train figures are on a subset of the training images the model learned from; validation images were held out.",
        "chance: the expected recall of a model that ranks candidates at random.",
    ]
    return "\n".join(lines + footer)


def _chance_text(key: str, figures: dict, images: int) -> str:
    from kubeclip.trainer.evaluation import chance_recall

    if key == "loss":
        return ""
    k = int(key.rsplit("_r", 1)[1])
    if key.startswith("image_to_text"):
        return _number(figures.get(f"image_to_text_chance_r{k}"))
    return _number(chance_recall(images, k))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
