"""The contrastive loss, the logit-scale bound, precision choice and the learning-rate shape."""

from __future__ import annotations

import math

import pytest
import torch

from kubeclip.trainer.config import OptimizationConfig
from kubeclip.trainer.loop import build_optimizer, build_scheduler, choose_precision, resolve_warmup_steps
from kubeclip.trainer.loss import MAX_LOGIT_SCALE, clamp_logit_scale, contrastive_loss, similarity_logits


def test_loss_is_low_for_aligned_pairs_and_log_n_for_uniform():
    embeds = torch.eye(4)
    aligned = contrastive_loss(similarity_logits(embeds, embeds, torch.tensor(math.log(100.0))))
    uniform = contrastive_loss(torch.zeros(4, 4))
    assert aligned.item() < 1e-3
    assert uniform.item() == pytest.approx(math.log(4))


def test_loss_is_symmetric_in_images_and_texts():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    scale = torch.tensor(2.0)
    forward = contrastive_loss(similarity_logits(images, texts, scale))
    swapped = contrastive_loss(similarity_logits(texts, images, scale))
    assert forward.item() == pytest.approx(swapped.item(), rel=1e-6)


def test_logit_scale_clamped_to_log_100():
    scale = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale(scale)
    assert scale.item() == pytest.approx(MAX_LOGIT_SCALE)


def test_precision_on_cpu_is_float32_and_says_so():
    precision = choose_precision("bfloat16", torch.device("cpu"))
    assert precision.autocast_dtype is None
    assert "bfloat16 requested" in precision.description


def test_default_warmup_is_five_percent():
    assert resolve_warmup_steps(OptimizationConfig(), 200) == 10
    assert resolve_warmup_steps(OptimizationConfig(warmup_steps=3), 200) == 3


def test_cosine_schedule_warms_up_then_decays_to_zero():
    model = torch.nn.Linear(2, 2)
    config = OptimizationConfig(learning_rate=1.0, warmup_steps=4, lr_scheduler="Cosine")
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] < rates[3] < rates[4] == pytest.approx(1.0)
    assert rates[-1] < 0.02


def test_weight_decay_skips_biases_and_logit_scale():
    model = torch.nn.Linear(3, 3)
    model.logit_scale = torch.nn.Parameter(torch.tensor(1.0))
    optimizer = build_optimizer(model, OptimizationConfig(weight_decay=0.1))
    decayed, undecayed = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 3])]
    assert decayed["weight_decay"] == 0.1
    assert len(undecayed["params"]) == 2
    assert undecayed["weight_decay"] == 0.0


def test_resumed_schedule_follows_new_length():
    model = torch.nn.Linear(2, 2)
    config = OptimizationConfig(learning_rate=1.0, warmup_steps=0, lr_scheduler="Cosine")
    optimizer = build_optimizer(model, config)
    short = build_scheduler(optimizer, config, total_steps=20)
    for _ in range(10):
        optimizer.step()
        short.step()
    saved = short.state_dict()

    longer_optimizer = build_optimizer(model, config)
    longer = build_scheduler(longer_optimizer, config, total_steps=40)
    longer.load_state_dict(saved)
    assert longer.last_epoch == 10
    longer_optimizer.step()
    longer.step()
    expected = 0.5 * (1.0 + math.cos(math.pi * 11 / 40))
    assert longer.get_last_lr()[0] == pytest.approx(expected)
