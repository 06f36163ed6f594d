"""Compare kubeclip's training and data-loading throughput with a transformers.Trainer baseline.

Both sides train the same randomly initialised dual encoder on the same ZIP of
image-caption pairs, with the same tokenizer, image processor, batch size, precision
and AdamW settings. The baseline preprocesses every item with transformers
components and trains with ``transformers.Trainer``; kubeclip uses its own loader
and ``train_one_epoch``. See docs/benchmarks.md for recorded figures.

Run from the repository root:

    .venv/bin/python benchmarks/throughput.py            # the full run, about 5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/throughput.py --quick    # a smoke run of a few steps
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Loader workers fork after the tokenizer has been used, and its thread pool would
# warn and may deadlock there. run.py sets the same.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# With libgomp's default (active) waiting, idle OpenMP threads spin. On a 2-core
# machine shared with other processes or loader workers, that made a Small-preset
# step 4 to 30 times slower with 2 threads than with 1 (measured with torch 2.15).
# Passive waiting removes that, and it must be set before torch loads OpenMP.
# Set OMP_WAIT_POLICY in the environment to measure another policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402

import baseline  # noqa: E402
import kubeclip_pipeline  # noqa: E402
from clocks import ENCODER_PHASES, PHASES, StepTiming  # noqa: E402
from workload import MODEL_CHOICES, Workload, build_workload  # noqa: E402

DEFAULT_DATASET = Path("/work/shared/data/captions-sample/captions-sample.zip")
BASELINE = "baseline"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each measurement runs; ``--quick`` shrinks all of it."""

    batch_sizes: tuple[int, ...]
    train_workers: tuple[int, ...]
    loader_workers: tuple[int, ...]
    repeats: int
    warmup_steps: int
    #: Samples the timed (post-warm-up) training steps cover; steps = ceil(samples / batch size).
    train_samples: int
    min_train_steps: int
    loader_warmup_batches: int
    #: Samples the timed loader batches cover; batches = ceil(samples / batch size).
    loader_samples: int
    profile: bool

    def train_steps(self, batch_size: int) -> int:
        return max(self.min_train_steps, -(-self.train_samples // batch_size))

    def loader_batches(self, batch_size: int) -> int:
        return max(1, -(-self.loader_samples // batch_size))


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset ZIP (captions.jsonl plus images) to read; it is never copied")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="small", help="small: the Small preset; base: ViT-B/32 and roberta-base sized, randomly initialised")
    parser.add_argument("--batch-sizes", type=_int_list, default=None, help="comma-separated batch sizes (default 8,64; 8 with --quick)")
    parser.add_argument("--workers", type=_int_list, default=(1,), help="comma-separated kubeclip loader worker counts for the training runs (default 1)")
    parser.add_argument("--loader-workers", type=_int_list, default=(0, 1, 2), help="comma-separated kubeclip worker counts for the data-loading runs (default 0,1,2)")
    parser.add_argument("--repeats", type=int, default=None, help="measurements per configuration, interleaved across sides; medians are reported (default 3)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="training steps run before timing starts (default 2)")
    parser.add_argument("--train-samples", type=int, default=None, help="samples the timed training steps cover, per measurement (default 768)")
    parser.add_argument("--loader-samples", type=int, default=None, help="samples the timed loader batches cover, per measurement (default 1024)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the weights, the caption choice and the sampling order")
    parser.add_argument("--profile", action="store_true", help="also profile one kubeclip training step per batch size with torch.profiler")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch size 8, one repeat, a few steps and batches; its figures are too short to compare")
    args = parser.parse_args(argv)

    quick = args.quick
    settings = Settings(
        batch_sizes=args.batch_sizes or ((8,) if quick else (8, 64)),
        train_workers=args.workers,
        loader_workers=args.loader_workers,
        repeats=_choose(args.repeats, quick=1, full=3, quick_run=quick),
        warmup_steps=_choose(args.warmup_steps, quick=1, full=2, quick_run=quick),
        train_samples=_choose(args.train_samples, quick=16, full=768, quick_run=quick),
        min_train_steps=2 if quick else 4,
        loader_warmup_batches=1 if quick else 3,
        loader_samples=_choose(args.loader_samples, quick=32, full=1024, quick_run=quick),
        profile=args.profile,
    )
    if settings.repeats < 1 or settings.train_samples < 1 or settings.loader_samples < 1:
        parser.error(f"--repeats, --train-samples and --loader-samples must be at least 1, got {settings.repeats}, {settings.train_samples} and {settings.loader_samples}")
    if settings.warmup_steps < 0 or any(size < 1 for size in settings.batch_sizes):
        parser.error(f"--warmup-steps must be at least 0 and every batch size at least 1, got {settings.warmup_steps} and {list(settings.batch_sizes)}")
    return args, settings


def _choose(value: int | None, *, quick: int, full: int, quick_run: bool) -> int:
    if value is not None:
        return value
    return quick if quick_run else full


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,64, got {text!r}") from None
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected one or more non-negative integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_arguments(argv)
    if not args.dataset.is_file():
        print(f"error: dataset {args.dataset} not found. Pass the dataset ZIP with --dataset.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    workload = build_workload(args.dataset, args.model, args.seed)
    # Trainer and the image processor warn once per measurement otherwise.
    transformers.logging.set_verbosity_error()
    kubeclip_data = kubeclip_pipeline.build_data(workload)
    baseline_data = baseline.BaselinePairs(workload)
    _check_batch_sizes(settings, len(workload.samples))
    _print_header(args, settings, workload, kubeclip_data)

    training = _measure_training(settings, workload, baseline_data, kubeclip_data)
    loading = _measure_loading(settings, workload, baseline_data, kubeclip_data)
    # NOTE: the CUDA path (bfloat16 autocast on both sides, synchronized timestamps,
    # this separate phase run) has not been run yet, because no GPU was available.
    if workload.device.type == "cuda":
        # Timed CUDA runs take no phase timestamps, because each one waits for the device.
        training_phases = _measure_phases(settings, workload, baseline_data, kubeclip_data)
    else:
        training_phases = training

    _print_training(settings, training)
    _print_loading(settings, loading)
    _print_phases(settings, training_phases, workload.device.type == "cuda")
    if settings.profile:
        _profile_kubeclip(settings, workload, kubeclip_data)
    load_at_end = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at start {_format_load(load_at_start)}, at end {_format_load(load_at_end)}, on {os.cpu_count()} CPUs")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


def _check_batch_sizes(settings: Settings, sample_count: int) -> None:
    too_large = [size for size in settings.batch_sizes if size > sample_count]
    if too_large:
        raise SystemExit(f"error: batch sizes {too_large} exceed the dataset's {sample_count} samples; pass smaller --batch-sizes")


def _measure_training(settings: Settings, workload: Workload, baseline_data, kubeclip_data) -> dict[tuple[str, int], list[StepTiming]]:
    """Time every side's training ``repeats`` times, alternating which side runs first."""
    results: dict[tuple[str, int], list[StepTiming]] = collections.defaultdict(list)
    phases = workload.device.type != "cuda"
    for batch_size in settings.batch_sizes:
        steps = settings.warmup_steps + settings.train_steps(batch_size)
        for repeat in range(settings.repeats):
            for side in _side_order(repeat, settings.train_workers):
                if side == BASELINE:
                    timing = baseline.train(workload, baseline_data, batch_size=batch_size, steps=steps, warmup_steps=settings.warmup_steps, phases=phases)
                else:
                    timing = kubeclip_pipeline.train(
                        workload, kubeclip_data, batch_size=batch_size, workers=side, steps=steps, warmup_steps=settings.warmup_steps, phases=phases
                    )
                results[(_label(side), batch_size)].append(timing)
                print(f"  train   batch {batch_size:3d}  repeat {repeat + 1}  {_label(side):12s} {timing.samples_per_second:8.1f} samples/s", flush=True)
    return results


def _measure_loading(settings: Settings, workload: Workload, baseline_data, kubeclip_data) -> dict[tuple[str, int], list[float]]:
    """Time every side's loader alone ``repeats`` times, alternating which side runs first."""
    results: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for batch_size in settings.batch_sizes:
        batches = settings.loader_batches(batch_size)
        for repeat in range(settings.repeats):
            for side in _side_order(repeat, settings.loader_workers):
                if side == BASELINE:
                    rate = baseline.load_batches(workload, baseline_data, batch_size=batch_size, batches=batches, warmup_batches=settings.loader_warmup_batches)
                else:
                    rate = kubeclip_pipeline.load_batches(
                        workload, kubeclip_data, batch_size=batch_size, workers=side, batches=batches, warmup_batches=settings.loader_warmup_batches
                    )
                results[(_label(side), batch_size)].append(rate)
                print(f"  loading batch {batch_size:3d}  repeat {repeat + 1}  {_label(side):12s} {rate:8.1f} samples/s", flush=True)
    return results


def _measure_phases(settings: Settings, workload: Workload, baseline_data, kubeclip_data) -> dict[tuple[str, int], list[StepTiming]]:
    """Run each side once per batch size with synchronizing phase timestamps (for CUDA)."""
    results: dict[tuple[str, int], list[StepTiming]] = collections.defaultdict(list)
    for batch_size in settings.batch_sizes:
        steps = settings.warmup_steps + settings.train_steps(batch_size)
        for side in _side_order(0, settings.train_workers):
            if side == BASELINE:
                timing = baseline.train(workload, baseline_data, batch_size=batch_size, steps=steps, warmup_steps=settings.warmup_steps, phases=True)
            else:
                timing = kubeclip_pipeline.train(workload, kubeclip_data, batch_size=batch_size, workers=side, steps=steps, warmup_steps=settings.warmup_steps, phases=True)
            results[(_label(side), batch_size)].append(timing)
    return results


def _side_order(repeat: int, worker_counts: tuple[int, ...]) -> list[str | int]:
    """Baseline first on even repeats and last on odd ones, so drifting machine load hits both sides."""
    sides: list[str | int] = [BASELINE, *worker_counts]
    return sides if repeat % 2 == 0 else sides[::-1]


def _label(side: str | int) -> str:
    return BASELINE if side == BASELINE else f"kubeclip w={side}"


def _profile_kubeclip(settings: Settings, workload: Workload, kubeclip_data) -> None:
    """Print the operators that took the most time in one kubeclip step after warm-up, per batch size."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if workload.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    workers = settings.train_workers[0]
    for batch_size in settings.batch_sizes:
        schedule = torch.profiler.schedule(wait=settings.warmup_steps, warmup=0, active=1, repeat=1)
        with torch.profiler.profile(activities=activities, schedule=schedule) as profiler:
            kubeclip_pipeline.train(
                workload, kubeclip_data, batch_size=batch_size, workers=workers, steps=settings.warmup_steps + 1, warmup_steps=settings.warmup_steps, phases=False, profiler=profiler
            )
        sort_key = "self_cuda_time_total" if workload.device.type == "cuda" else "self_cpu_time_total"
        print(f"\ntorch.profiler: one kubeclip step, batch {batch_size}, {workers} loader workers, top operators by {sort_key}")
        print(profiler.key_averages().table(sort_by=sort_key, row_limit=15))


# --- Output -----------------------------------------------------------------------


def _print_header(args: argparse.Namespace, settings: Settings, workload: Workload, kubeclip_data) -> None:
    parameters = sum(parameter.numel() for parameter in workload.build_model().parameters())
    print("kubeclip throughput benchmark")
    print(f"  dataset       {workload.zip_path} ({len(workload.samples)} samples)")
    print(f"  model         {args.model}: {parameters / 1e6:.2f} M parameters, vocabulary {len(workload.tokenizer)}")
    print(f"  image proc.   {type(workload.image_processor).__name__}")
    print(f"  device        {workload.device} ({_cpu_model()}, {os.cpu_count()} CPUs)")
    print(f"  precision     {workload.precision.description}")
    print(f"  torch threads {torch.get_num_threads()} (torch.get_num_threads()), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"  versions      python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"  setup         archive validation and tokenizer training {workload.setup_seconds:.1f} s; kubeclip eager tokenization {kubeclip_data.tokenize_seconds:.2f} s (both untimed)")
    steps = ", ".join(f"batch {size}: {settings.warmup_steps} + {settings.train_steps(size)}" for size in settings.batch_sizes)
    batches = ", ".join(f"batch {size}: {settings.loader_warmup_batches} + {settings.loader_batches(size)}" for size in settings.batch_sizes)
    print(f"  training      warm-up + timed steps per measurement: {steps}; kubeclip workers {list(settings.train_workers)}")
    print(f"  data loading  warm-up + timed batches per measurement: {batches}; kubeclip workers {list(settings.loader_workers)}")
    print(f"  repeats       {settings.repeats}, interleaved; medians reported")
    print(flush=True)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _format_load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.1f}" for value in load)


def _median_and_range(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def _print_training(settings: Settings, results: dict[tuple[str, int], list[StepTiming]]) -> None:
    print(f"\nTraining throughput, samples/s: median of {settings.repeats} (min-max)")
    kubeclip_labels = [_label(workers) for workers in settings.train_workers]
    header = ["batch", "baseline", "s/step"] + [column for label in kubeclip_labels for column in (label, "s/step", "ratio")]
    rows = []
    for batch_size in settings.batch_sizes:
        base = results[(BASELINE, batch_size)]
        base_median = statistics.median(timing.samples_per_second for timing in base)
        row = [str(batch_size), _median_and_range([timing.samples_per_second for timing in base]), f"{statistics.median(timing.seconds_per_step for timing in base):.3f}"]
        for label in kubeclip_labels:
            runs = results[(label, batch_size)]
            median = statistics.median(timing.samples_per_second for timing in runs)
            row += [_median_and_range([timing.samples_per_second for timing in runs]), f"{statistics.median(timing.seconds_per_step for timing in runs):.3f}", f"{median / base_median:.2f}x"]
        rows.append(row)
    _print_table(header, rows)


def _print_loading(settings: Settings, results: dict[tuple[str, int], list[float]]) -> None:
    print(f"\nData-loading throughput (loader alone, no model), samples/s: median of {settings.repeats} (min-max)")
    kubeclip_labels = [_label(workers) for workers in settings.loader_workers]
    header = ["batch", "baseline"] + [column for label in kubeclip_labels for column in (label, "ratio")]
    rows = []
    for batch_size in settings.batch_sizes:
        base = results[(BASELINE, batch_size)]
        row = [str(batch_size), _median_and_range(base)]
        for label in kubeclip_labels:
            runs = results[(label, batch_size)]
            row += [_median_and_range(runs), f"{statistics.median(runs) / statistics.median(base):.2f}x"]
        rows.append(row)
    _print_table(header, rows)


def _print_phases(settings: Settings, results: dict[tuple[str, int], list[StepTiming]], separate_run: bool) -> None:
    source = "one separate run with synchronized timestamps" if separate_run else f"median over {settings.repeats} repeats of each run's mean"
    print(f"\nWhere a training step's time goes, ms per step ({source})")
    print("  data: previous step's end to forward start (waiting for the batch, moving it, loop bookkeeping)")
    print("  backward: forward end to optimizer start (loss, backward, gradient clipping); other: after the optimizer")
    print("  vision/text forward: the part of forward spent in each encoder; text tokens: mean padded caption length")
    encoder_columns = [name.replace("_", " ") for name in ENCODER_PHASES]
    header = ["batch", "side", *PHASES, "step", *encoder_columns, "text tokens"]
    rows = []
    for (label, batch_size), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0] != BASELINE, item[0][0])):
        with_phases = [timing for timing in runs if timing.phase_seconds]
        if not with_phases:
            continue
        phase_ms = [f"{statistics.median(timing.phase_seconds[name] for timing in with_phases) * 1e3:.0f}" for name in PHASES]
        step_ms = statistics.median(timing.seconds_per_step for timing in with_phases) * 1e3
        encoder_ms = [_median_ms(with_phases, name) for name in ENCODER_PHASES]
        tokens = [timing.mean_text_tokens for timing in with_phases if timing.mean_text_tokens is not None]
        rows.append([str(batch_size), label, *phase_ms, f"{step_ms:.0f}", *encoder_ms, f"{statistics.median(tokens):.1f}" if tokens else "-"])
    _print_table(header, rows)


def _median_ms(timings: list[StepTiming], phase: str) -> str:
    values = [timing.phase_seconds[phase] for timing in timings if phase in timing.phase_seconds]
    return f"{statistics.median(values) * 1e3:.0f}" if values else "-"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(header[column]), *(len(row[column]) for row in rows)) for column in range(len(header))]
    print("  " + "  ".join(cell.rjust(width) for cell, width in zip(header, widths)))
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
