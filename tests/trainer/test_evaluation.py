"""Whole-split retrieval figures computed from embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from kubeclip.trainer.evaluation import SplitEmbeddings, chance_image_to_text_recall, chance_recall, score_embeddings


def embeddings_with_owners(images: torch.Tensor, captions: torch.Tensor, owners: list[int]) -> SplitEmbeddings:
    normalize = torch.nn.functional.normalize
    return SplitEmbeddings(normalize(images, dim=-1), normalize(captions, dim=-1), torch.tensor(owners))


def test_perfect_alignment_gives_full_recall():
    images = torch.eye(4)
    captions = torch.eye(4).repeat_interleave(2, dim=0)  # two captions per image
    results = score_embeddings(embeddings_with_owners(images, captions, [0, 0, 1, 1, 2, 2, 3, 3]), logit_scale=math.log(100), seed=0)
    assert results["image_to_text_r1"] == 1.0
    assert results["text_to_image_r1"] == 1.0
    assert results["mean_matched_similarity"] == pytest.approx(1.0)
    assert results["mean_mismatched_similarity"] == pytest.approx(0.0)
    assert results["loss"] < 0.01


def test_swapped_pairs_give_zero_recall_at_one():
    images = torch.eye(3)
    captions = torch.eye(3)[[1, 2, 0]]  # caption of image i points at image i+1
    results = score_embeddings(embeddings_with_owners(images, captions, [0, 1, 2]), logit_scale=0.0, seed=0)
    assert results["image_to_text_r1"] == 0.0
    assert results["text_to_image_r1"] == 0.0
    assert results["text_to_image_r5"] == 1.0  # k above the split size counts every image


def test_loss_uses_whole_split_not_batches():
    images = torch.eye(5)
    uniform = score_embeddings(embeddings_with_owners(torch.ones(5, 5), torch.ones(5, 5), [0, 1, 2, 3, 4]), logit_scale=0.0, seed=0)
    assert uniform["loss"] == pytest.approx(math.log(5), rel=1e-5)
    assert images.shape[0] == uniform["images"]


def test_chance_recall_formulas():
    assert chance_recall(45, 5) == pytest.approx(5 / 45)
    assert chance_recall(3, 5) == 1.0
    # One caption per image: the same as text-to-image chance.
    assert chance_image_to_text_recall([1] * 10, 2) == pytest.approx(0.2)
    # Two of four captions belong to the image: P(miss with one draw) = 2/4.
    assert chance_image_to_text_recall([2, 2], 1) == pytest.approx(0.5)
