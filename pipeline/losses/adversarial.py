"""Adversarial losses on PatchGAN logit maps: BCE (paper 000 eq. 10) and hinge (paper 004)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Every patch of the real image labelled 1, every patch of the generated one 0."""
    return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_bce(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator is rewarded when the discriminator calls its patches real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


ADVERSARIAL_LOSSES = {"bce": (discriminator_bce, generator_bce), "hinge": (discriminator_hinge, generator_hinge)}
