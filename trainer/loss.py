"""The symmetric contrastive (InfoNCE) loss of CLIP and the bound on its temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# CLIP (Radford et al., 2021, section 2.5) clips the learned logit scale so logits are
# never multiplied by more than 100; without the bound the scale can grow until the
# loss overflows to NaN.
MAX_LOGIT_SCALE = math.log(100.0)


def similarity_logits(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities.

    Args:
        image_embeds: (N, D) projected image features, any scale.
        text_embeds: (M, D) projected text features, any scale.
        logit_scale: scalar, the log of the multiplier.

    Returns:
        (N, M) float32 logits; row i scores image i against every caption.
    """
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    return logit_scale.float().exp() * image_embeds @ text_embeds.t()


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Mean of image-to-text and text-to-image cross-entropy; pair i matches caption i.

    Args:
        logits_per_image: (N, N) logits from ``similarity_logits``.
    """
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, targets)
    text_to_image = F.cross_entropy(logits_per_image.t(), targets)
    return (image_to_text + text_to_image) / 2


@torch.no_grad()
def clamp_logit_scale(logit_scale: torch.nn.Parameter) -> None:
    """Keep the logit scale in [0, log 100] after each optimizer step."""
    logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
