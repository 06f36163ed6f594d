"""The final model: Hugging Face format, a model card, a reload check, and the upload.

Called once by the training run after the last step. The check reloads the saved
folder with ``from_pretrained`` exactly as a user would, so a run only reports
success for a model that loads and works.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

from kubeclip.trainer.checkpoint import file_sha256, make_readable
from kubeclip.trainer.config import TrainerConfig
from kubeclip.trainer.errors import TrainerError
from kubeclip.trainer.evaluation import EvaluationSet, SplitEmbeddings, embed_split, mean_similarities
from kubeclip.trainer.storage import paths, remote

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# Reloaded weights are bit-identical, but kernels may sum in another order.
_RELOAD_TOLERANCE = 1e-4


def save_final_model(model, tokenizer, image_processor, folder: Path) -> str:
    """Save model, tokenizer and image processor with ``save_pretrained``; return the weights' SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    make_readable(folder / WEIGHTS_FILE)
    return file_sha256(folder / WEIGHTS_FILE)


def verify_saved_model(folder: Path, reference: SplitEmbeddings, split: EvaluationSet, *, device: torch.device, autocast: Callable, batch_size: int) -> dict[str, float]:
    """Reload the saved model and check it reproduces ``reference`` and ranks matched pairs first.

    Raises:
        TrainerError: the reloaded model's embeddings differ from the trained model's,
            or matched validation pairs do not score above mismatched ones on average.
    """
    reloaded = VisionTextDualEncoderModel.from_pretrained(folder).to(device)
    embeddings = embed_split(reloaded, split, batch_size=batch_size, num_workers=0, device=device, autocast=autocast)
    image_drift = (embeddings.images - reference.images).abs().max().item()
    caption_drift = (embeddings.captions - reference.captions).abs().max().item()
    if max(image_drift, caption_drift) > _RELOAD_TOLERANCE:
        raise TrainerError(f"the saved model in {folder} does not reproduce the trained model (max embedding difference {max(image_drift, caption_drift):.2e})")
    matched, mismatched = mean_similarities(embeddings)
    if not matched > mismatched:
        raise TrainerError(
            f"the saved model scores matched validation pairs ({matched:.4f} mean cosine) no higher than mismatched ones "
            f"({mismatched:.4f}): it has not learned to align images and captions. Train longer, raise "
            "spec.training.learningRate, or check that the captions describe their images"
        )
    logger.info("final model check passed", extra={"matched_similarity": matched, "mismatched_similarity": mismatched})
    return {"matched_similarity": matched, "mismatched_similarity": mismatched, "max_reload_difference": max(image_drift, caption_drift)}


def write_model_card(folder: Path, config: TrainerConfig, figures: dict[str, Any], weights_sha256: str) -> Path:
    """Write ``README.md`` with the base encoders, data, settings and final evaluation figures."""
    validation = figures["final_validation"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: zero-shot-image-classification",
        "tags: [clip, vision-text-dual-encoder, kubeclip]",
        "---",
        f"# {config.job.experiment}",
        "",
        f"A vision-text dual encoder fine-tuned by kubeclip (job {config.job.namespace}/{config.job.name}).",
        "",
        "## Model",
        *_encoder_lines(config),
        f"- Projection size: {config.model.projection_dim}",
        f"- Weights: `{WEIGHTS_FILE}`, SHA-256 `{weights_sha256}`",
        "",
        "## Training",
        f"- Dataset: `{config.data.source}` ({figures['train_images']} training and {figures['validation_images']} validation images)",
        f"- Steps: {figures['steps']}, epochs: {config.optimization.epochs}, batch size: {config.optimization.train_batch_size}",
        f"- Learning rate: {config.optimization.learning_rate:g} ({config.optimization.lr_scheduler}), precision: {figures['precision']}",
        "",
        "## Evaluation on the validation split",
        "| figure | before training | after training |",
        "| --- | --- | --- |",
    ]
    baseline = figures.get("baseline_validation") or {}
    for key in ("loss", "image_to_text_r1", "image_to_text_r5", "image_to_text_r10", "text_to_image_r1", "text_to_image_r5", "text_to_image_r10"):
        before = f"{baseline[key]:.4f}" if key in baseline else "n/a"
        lines.append(f"| {key} | {before} | {validation[key]:.4f} |")
    lines += [
        "",
        "Recall@K: share of queries whose match is among the K best-scoring candidates of the whole split.",
        "",
        "## Use",
        "```python",
        "from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor",
        'model = VisionTextDualEncoderModel.from_pretrained("PATH")',
        'processor = VisionTextDualEncoderProcessor.from_pretrained("PATH")',
        "```",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _encoder_lines(config: TrainerConfig) -> list[str]:
    if config.model.preset is not None:
        return [
            f"- Vision encoder: {config.model.preset} preset, a 4-layer CLIP vision transformer trained from random weights",
            f"- Text encoder: {config.model.preset} preset, a 4-layer RoBERTa trained from random weights, with a tokenizer trained on the captions",
        ]
    return [f"- Vision encoder: `{config.model.vision_encoder}`", f"- Text encoder: `{config.model.text_encoder}`"]


def publish_outputs(staging_dir: Path, config: TrainerConfig) -> str:
    """Upload the run folder to an object-store output; return where the final model is."""
    location = config.output.location
    if paths.is_local(location):
        return str(paths.local_path(location) / "model")
    for path in sorted(staging_dir.rglob("*")):
        parts = path.relative_to(staging_dir).parts
        if path.is_file() and "checkpoints" not in parts and not parts[-1].startswith("."):
            remote.upload_file(path, paths.join(location, *parts), region=config.output.region, profile=config.output.profile)
    return paths.join(location, "model")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    partial.replace(path)
