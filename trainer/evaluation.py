"""Retrieval evaluation over a whole split: contrastive loss and recall@1/5/10 both ways.

Called by the training loop at the baseline, every ``eval_steps`` and at the end, and
by the final model check. Embeddings of every image and caption of the split are
computed first and compared all against all, so the figures do not depend on the
evaluation batch size (a per-batch contrastive loss over one pair is always zero).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import AbstractContextManager
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kubeclip.trainer.data.loading import CaptionSource, CollateImages, EvaluationImages, ImageLoader, build_loader, choose_caption
from kubeclip.trainer.data.text import pad_token_batch
from kubeclip.trainer.data.validation import Sample
from kubeclip.trainer.loss import contrastive_loss
from kubeclip.trainer.metrics import RECALL_KS

# A fixed "epoch" for picking each image's caption in the loss, so every evaluation
# scores the same pairs and the curve is comparable over time.
_EVAL_CAPTION_EPOCH = -1


@dataclasses.dataclass
class SplitEmbeddings:
    """Normalised embeddings of one split.

    Attributes:
        images: (num_images, D) float32.
        captions: (num_captions, D) float32, all captions of every image.
        caption_owner: (num_captions,) int64, the image index of each caption.
    """

    images: torch.Tensor
    captions: torch.Tensor
    caption_owner: torch.Tensor


@dataclasses.dataclass
class EvaluationSet:
    """One split to evaluate: its samples, image loader and captions."""

    name: str
    samples: Sequence[Sample]
    images: ImageLoader
    captions: CaptionSource
    seed: int


@torch.no_grad()
def embed_split(model, split: EvaluationSet, *, batch_size: int, num_workers: int, device: torch.device, autocast: Callable[[], AbstractContextManager]) -> SplitEmbeddings:
    """Encode every image and caption of ``split`` with ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    loader = build_loader(EvaluationImages(split.samples, split.images), batch_size=batch_size, num_workers=num_workers, collate=CollateImages())
    image_chunks = []
    for pixel_values in loader:
        with autocast():
            features = model.get_image_features(pixel_values=pixel_values.to(device, non_blocking=True)).pooler_output
        image_chunks.append(F.normalize(features.float(), dim=-1).cpu())

    ids, owners = _all_captions(split)
    caption_chunks = []
    for start in range(0, len(ids), batch_size):
        input_ids, attention_mask = pad_token_batch(ids[start : start + batch_size], split.captions.tokenizer.pad_token_id)
        with autocast():
            features = model.get_text_features(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).pooler_output
        caption_chunks.append(F.normalize(features.float(), dim=-1).cpu())
    model.train(was_training)
    return SplitEmbeddings(torch.cat(image_chunks), torch.cat(caption_chunks), torch.tensor(owners, dtype=torch.long))


def _all_captions(split: EvaluationSet) -> tuple[list[Sequence[int]], list[int]]:
    ids, owners = [], []
    for sample_index, sample in enumerate(split.samples):
        for caption_index in range(len(sample.captions)):
            ids.append(split.captions.token_ids(sample_index, caption_index))
            owners.append(sample_index)
    return ids, owners


def score_embeddings(embeddings: SplitEmbeddings, logit_scale: float, seed: int) -> dict[str, float]:
    """Loss and recall figures of a split.

    - ``loss``: the training loss over the N x N matrix of every image and one fixed
      caption of each (its chance level is log N, so it grows with the split's size).
    - ``image_to_text_rK``: share of images with at least one of their captions among
      the K best-scoring captions of the split.
    - ``text_to_image_rK``: share of captions whose image is among the K best images.
    - ``mean_matched_similarity`` / ``mean_mismatched_similarity``: mean cosine of an
      image with its own captions, and with captions of other images.
    """
    similarity = embeddings.images @ embeddings.captions.t()
    results = {"loss": _fixed_pair_loss(embeddings, similarity, logit_scale, seed)}
    results.update(_recall(similarity, embeddings.caption_owner))
    results["mean_matched_similarity"], results["mean_mismatched_similarity"] = mean_similarities(embeddings, similarity)
    results["images"] = float(similarity.shape[0])
    results["captions"] = float(similarity.shape[1])
    counts = torch.bincount(embeddings.caption_owner, minlength=similarity.shape[0]).tolist()
    for k in RECALL_KS:
        results[f"image_to_text_chance_r{k}"] = chance_image_to_text_recall(counts, k)
    return results


def mean_similarities(embeddings: SplitEmbeddings, similarity: torch.Tensor | None = None) -> tuple[float, float]:
    """Return the mean cosine of images with their own captions, and with other images' captions (NaN if none).

    Args:
        similarity: ``images @ captions.T`` when the caller has it already.
    """
    if similarity is None:
        similarity = embeddings.images @ embeddings.captions.t()
    matched = embeddings.caption_owner.unsqueeze(0) == torch.arange(similarity.shape[0]).unsqueeze(1)
    mismatched = similarity[~matched].mean().item() if (~matched).any() else float("nan")
    return similarity[matched].mean().item(), mismatched


def _fixed_pair_loss(embeddings: SplitEmbeddings, similarity: torch.Tensor, logit_scale: float, seed: int) -> float:
    first_caption = torch.searchsorted(embeddings.caption_owner, torch.arange(similarity.shape[0]))
    counts = torch.bincount(embeddings.caption_owner, minlength=similarity.shape[0])
    chosen = [int(first) + choose_caption(seed, _EVAL_CAPTION_EPOCH, index, int(count)) for index, (first, count) in enumerate(zip(first_caption, counts))]
    logits = similarity[:, chosen] * torch.tensor(logit_scale).exp()
    return contrastive_loss(logits).item()


def _recall(similarity: torch.Tensor, caption_owner: torch.Tensor) -> dict[str, float]:
    num_images = similarity.shape[0]
    results = {}
    for k in RECALL_KS:
        top_captions = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
        image_hits = (caption_owner[top_captions] == torch.arange(num_images).unsqueeze(1)).any(dim=1)
        top_images = similarity.t().topk(min(k, num_images), dim=1).indices
        text_hits = (top_images == caption_owner.unsqueeze(1)).any(dim=1)
        results[f"image_to_text_r{k}"] = image_hits.float().mean().item()
        results[f"text_to_image_r{k}"] = text_hits.float().mean().item()
    return results


def chance_recall(num_images: int, k: int) -> float:
    """Expected text-to-image recall@k of a model that ranks images at random."""
    return min(k, num_images) / num_images


def chance_image_to_text_recall(caption_counts: Sequence[int], k: int) -> float:
    """Expected image-to-text recall@k of a model that ranks captions at random.

    An image with ``c`` of the ``n`` captions misses only if all ``k`` drawn captions
    are among the other ``n - c``: the chance of that is C(n-c, k) / C(n, k).
    """
    total = sum(caption_counts)
    hits = [1.0 - math.comb(total - count, k) / math.comb(total, k) if k <= total else 1.0 for count in caption_counts]
    return sum(hits) / len(hits)
