"""Occluder segmentation losses on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    total = probability.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * intersection + eps) / (total + eps)).mean()


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary cross-entropy plus soft Dice: Dice keeps small occluders from vanishing under BCE."""
    return {"bce": F.binary_cross_entropy_with_logits(logits, target), "dice": soft_dice_loss(logits, target)}
