"""The ``kubeclip dataset`` subcommands: ``validate`` and ``pack``.

``kubeclip.cli.main`` calls ``register`` to add them to its parser. Each parsed
subcommand stores its handler in ``args.handler``. A handler takes the parsed
arguments and returns the process exit code. Handlers print results to stdout
and errors as one line to stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from kubeclip.trainer.config import CAPTION_PLACEHOLDER, DataConfig, RuntimeConfig
from kubeclip.trainer.errors import ConfigError, ExitCode, TrainerError

if TYPE_CHECKING:
    from kubeclip.trainer.data.pack import PackResult
    from kubeclip.trainer.data.stats import DatasetStatistics, TokenCounter
    from kubeclip.trainer.data.validation import ValidationReport

# The data modules import torch; they load when a dataset command runs, so that other
# commands (the operator above all) start without it.
BUILTIN_SCHEME = "builtin://"
DEFAULT_MAX_IMAGE_PIXELS = DataConfig.__dataclass_fields__["max_image_pixels"].default

#: Default of ``--prompt-max-length``: the trainer's own default.
DEFAULT_PROMPT_MAX_LENGTH = DataConfig.prompt_max_length
#: The trainer rejects shorter prompt max lengths.
MIN_PROMPT_MAX_LENGTH = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dataset validate`` and ``dataset pack`` to a parser's subcommands."""
    dataset_parser = subparsers.add_parser("dataset", help="Validate dataset archives or pack a folder into one.")
    commands = dataset_parser.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")
    _add_validate_parser(commands)
    _add_pack_parser(commands)


def _add_validate_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "validate",
        help="Check a dataset archive and print its problems and statistics.",
        description="Check every line and image of a dataset archive. The exit code is 0 when it is valid, 3 when it is invalid, "
        "and 2 or 4 when the options are invalid or the archive cannot be read.",
    )
    parser.add_argument(
        "zip", metavar="ZIP", help=f"dataset archive: a local path, an s3://, gs:// or http(s):// URL, or {BUILTIN_SCHEME}NAME for a built-in dataset"
    )
    parser.add_argument("--skip-invalid", action="store_true", help="exit 0 if at least one sample is valid, and summarise what training would skip")
    parser.add_argument(
        "--job",
        metavar="JOB.yaml",
        type=Path,
        help="take the tokenizer and prompt settings from a ClipTrainingJob file (options given here still win); "
        "with the Small preset, the tokenizer is trained on the archive's captions as in training",
    )
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", help="tokenizer directory or Hugging Face id, to add token-length statistics")
    parser.add_argument(
        "--prompt-max-length",
        type=int,
        metavar="N",
        help=f"max tokens per caption after the prompt is applied, above which captions count as truncated (default: {DEFAULT_PROMPT_MAX_LENGTH})",
    )
    parser.add_argument("--system-prompt", metavar="S", help="static text put before every caption when counting tokens")
    parser.add_argument("--prompt-template", metavar="T", help=f"template with one {CAPTION_PLACEHOLDER} placeholder, such as 'a photo of {CAPTION_PLACEHOLDER}'")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help=f"images with more pixels are invalid, as possible decompression bombs (default: {DEFAULT_MAX_IMAGE_PIXELS})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(RuntimeConfig().cache_dir),
        metavar="DIR",
        help=f"folder for downloaded and built-in datasets (default: {RuntimeConfig().cache_dir})",
    )
    parser.add_argument("--json", action="store_true", help="print the report and statistics as JSON")
    parser.set_defaults(handler=run_validate)


def _add_pack_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "pack",
        help="Pack a folder of images and captions into a dataset archive.",
        description="Pack images and a captions file (*.jsonl, or captions.csv / captions.tsv with columns image,caption) into a dataset archive.",
    )
    parser.add_argument("dir", metavar="DIR", type=Path, help="folder that contains the images and the captions file")
    parser.add_argument("-o", "--output", metavar="OUT.zip", type=Path, required=True, help="archive to write")
    parser.add_argument("--captions-file", metavar="FILE", help="captions file relative to DIR, when the folder contains several")
    parser.set_defaults(handler=run_pack)


def run_validate(args: argparse.Namespace) -> int:
    from kubeclip.trainer.data.sources import fetch_dataset
    from kubeclip.trainer.data.stats import compute_statistics
    from kubeclip.trainer.data.validation import validate_archive

    """Validate an archive, print the report and statistics, and return 0 (valid) or 3 (invalid)."""
    try:
        small_preset = _apply_job_settings(args)
        _check_prompt_arguments(args)
        zip_path = fetch_dataset(DataConfig(source=args.zip), args.cache_dir.expanduser())
        report = validate_archive(zip_path, max_image_pixels=args.max_image_pixels)
        count_tokens = _small_preset_counter(report, args) if small_preset else _load_token_counter(args)
        stats = compute_statistics(report, count_tokens=count_tokens, prompt_max_length=args.prompt_max_length)
    except TrainerError as err:
        return _print_error(err, err.exit_code)
    print(_render_validation(report, stats, args))
    return _validation_exit_code(report, args.skip_invalid)


def _apply_job_settings(args: argparse.Namespace) -> bool:
    """Fill unset prompt and tokenizer options from ``--job``; return True for the Small preset."""
    if args.job is None:
        args.prompt_max_length = args.prompt_max_length or DEFAULT_PROMPT_MAX_LENGTH
        return False
    from kubeclip.api.loading import InvalidJobError, load_job_file
    from kubeclip.api.recommendations import resolve_settings

    try:
        job = load_job_file(args.job)
        settings = resolve_settings(job)
    except (InvalidJobError, ValueError) as err:
        raise ConfigError(str(err)) from err
    dataset = job.spec.dataset
    args.prompt_max_length = args.prompt_max_length or settings.prompt_max_length
    args.system_prompt = args.system_prompt if args.system_prompt is not None else dataset.system_prompt
    args.prompt_template = args.prompt_template if args.prompt_template is not None else dataset.prompt_template
    small_preset = job.spec.model.preset is not None and args.tokenizer is None
    if not small_preset:
        args.tokenizer = args.tokenizer or job.spec.model.base_model
    return small_preset


def _small_preset_counter(report: ValidationReport, args: argparse.Namespace) -> TokenCounter:
    """Train the Small preset's tokenizer on the archive's captions, as a training run does."""
    from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat
    from kubeclip.trainer.presets import train_small_tokenizer

    prompt = PromptFormat(system_prompt=args.system_prompt, template=args.prompt_template)
    texts = [prompt.apply(caption) for sample in report.samples for caption in sample.captions]
    tokenizer = train_small_tokenizer(texts, args.prompt_max_length)
    return CaptionTokenizer(tokenizer, prompt, max_length=args.prompt_max_length).count_tokens


def _check_prompt_arguments(args: argparse.Namespace) -> None:
    if args.prompt_max_length < MIN_PROMPT_MAX_LENGTH:
        raise ConfigError(f"--prompt-max-length must be at least {MIN_PROMPT_MAX_LENGTH} tokens, got {args.prompt_max_length}")
    if args.prompt_template is not None and args.prompt_template.count(CAPTION_PLACEHOLDER) != 1:
        raise ConfigError(
            f"--prompt-template {args.prompt_template!r} must contain {CAPTION_PLACEHOLDER} exactly once, "
            f"such as 'a photo of {CAPTION_PLACEHOLDER}'"
        )


def _load_token_counter(args: argparse.Namespace) -> TokenCounter | None:
    """Return a token counter for ``--tokenizer``, or None (with a warning) when it is not given or fails to load.

    Counting uses the trainer's own prompt formatting, so the counts match training.
    """
    if args.tokenizer is None:
        return None
    # Imported here because transformers takes seconds to import and only this option needs it.
    from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat

    try:
        tokenizer = _load_tokenizer(args.tokenizer)
    except (OSError, ValueError, ImportError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(
            f"warning: tokenizer {args.tokenizer!r} could not be loaded ({reason}), so token statistics are left out. "
            "Fix: pass a local tokenizer directory, or a Hugging Face id that is reachable.",
            file=sys.stderr,
        )
        return None
    prompt = PromptFormat(system_prompt=args.system_prompt, template=args.prompt_template)
    return CaptionTokenizer(tokenizer, prompt, max_length=args.prompt_max_length).count_tokens


def _load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, local_files_only=Path(name_or_path).is_dir())


def _render_validation(report: ValidationReport, stats: DatasetStatistics, args: argparse.Namespace) -> str:
    from kubeclip.trainer.data.stats import format_report

    if args.json:
        return json.dumps({"report": report.to_dict(), "statistics": stats.to_dict()}, indent=2)
    text = format_report(report, stats)
    if args.skip_invalid and not report.is_valid:
        text += f"\n\nWith --skip-invalid, training uses the {len(report.samples)} valid samples and skips the rest."
    return text


def _validation_exit_code(report: ValidationReport, skip_invalid: bool) -> int:
    if report.is_valid or (skip_invalid and report.samples):
        return int(ExitCode.SUCCEEDED)
    return int(ExitCode.INVALID_DATASET)


def run_pack(args: argparse.Namespace) -> int:
    from kubeclip.trainer.data.pack import pack_directory

    """Pack a folder into a dataset archive, print what was written, and return the exit code."""
    try:
        result = pack_directory(args.dir, args.output, captions_file=args.captions_file)
    except TrainerError as err:
        return _print_error(err, err.exit_code)
    except OSError as err:
        return _print_error(f"cannot pack {args.dir} into {args.output}: {err}", ExitCode.STORAGE_FAILED)
    print(_render_pack_result(result))
    return int(ExitCode.SUCCEEDED)


def _render_pack_result(result: PackResult) -> str:
    lines = [f"Packed {result.image_count} images with {result.caption_count} captions into {result.output_zip} ({result.archive_bytes} bytes)."]
    if result.unlisted_images:
        examples = ", ".join(result.unlisted_images[:3])
        lines.append(f"{len(result.unlisted_images)} image files in the folder are not in the captions file and were left out, such as {examples}.")
    lines += [f"warning: {problem}" for problem in result.report.warnings]
    return "\n".join(lines)


def _print_error(error: object, exit_code: int) -> int:
    print(f"error: {error}", file=sys.stderr)
    return int(exit_code)
