"""The PNG of loss and recall curves written at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in pods or CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw training and validation loss (left) and recall@1/5 per split (right) against the step."""
    figure, (loss_axes, recall_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    train = [entry for entry in history if entry["kind"] == "train"]
    loss_axes.plot([e["step"] for e in train], [e["loss"] for e in train], label="training loss (batch)", alpha=0.8)
    for split, style in (("validation", "o-"), ("train", "s--")):
        evals = [entry for entry in history if entry["kind"] == "eval" and entry["split"] == split]
        if not evals:
            continue
        steps = [e["step"] for e in evals]
        loss_axes.plot(steps, [e["loss"] for e in evals], style, label=f"{split} loss (whole split)")
        for key, label in (("text_to_image_r1", "text→image R@1"), ("text_to_image_r5", "text→image R@5"), ("image_to_text_r1", "image→text R@1")):
            recall_axes.plot(steps, [e[key] for e in evals], style, label=f"{split} {label}")
    loss_axes.set(xlabel="optimizer step", ylabel="contrastive loss", title="Loss")
    recall_axes.set(xlabel="optimizer step", ylabel="recall", title="Retrieval recall", ylim=(0, 1.02))
    loss_axes.legend(fontsize=8)
    recall_axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
