"""Occluder segmentation losses on logits.

A segmenter outputs either one channel (the occluder) or three (background, face, occluder, as
SOCLNET); the occluder is always the last channel. Both papers train with BCE: per pixel for one
channel, per class (one-hot targets) for three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def occluder_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): the occluder channel."""
    return logits[:, -1:]


def segmentation_targets(logits: torch.Tensor, occluder_mask: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return occluder_mask
    return F.one_hot(label_map.long(), logits.shape[1]).permute(0, 3, 1, 2).float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    total = probability.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * intersection + eps) / (total + eps)).mean()


def bce_dice(logits: torch.Tensor, occluder_mask: torch.Tensor, label_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE over every output channel plus soft Dice on the occluder channel (Dice keeps small
    occluders from vanishing under BCE; its weight may be 0 for the papers' plain BCE)."""
    targets = segmentation_targets(logits, occluder_mask, label_map)
    return {"bce": F.binary_cross_entropy_with_logits(logits, targets),
            "dice": soft_dice_loss(occluder_logits(logits), occluder_mask)}
