"""Pixel reconstruction losses; hidden and known pixels weighted apart (LaMa's feature_matching.py)."""

from __future__ import annotations

import torch


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels where mask is 1; zero when the mask is empty."""
    weight = mask.expand_as(prediction)
    return (weight * (prediction - target).abs()).sum() / weight.sum().clamp_min(1.0)


def hole_valid_l1(prediction: torch.Tensor, target: torch.Tensor, occluder_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 inside the occluder (`hole_l1`) and outside it (`valid_l1`), each a mean over its pixels."""
    return {
        "hole_l1": masked_l1(prediction, target, occluder_mask),
        "valid_l1": masked_l1(prediction, target, 1 - occluder_mask),
    }


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of the terms named in weights; a weight naming no term is an error, not a silent zero."""
    missing = sorted(set(weights) - set(terms))
    if missing:
        raise KeyError(f"loss weights name unknown term(s) {missing}; available: {sorted(terms)}")
    return sum(weights[name] * terms[name] for name in weights)


def total_variation(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Paper 002's eq. 3, isotropic: sqrt((I[i,j-1] - I[i,j])^2 + (I[i+1,j] - I[i,j])^2), averaged over
    pixels and channels instead of summed, so that its weight does not depend on the image size."""
    horizontal = image[..., :-1, :-1] - image[..., :-1, 1:]
    vertical = image[..., 1:, :-1] - image[..., :-1, :-1]
    return torch.sqrt(horizontal ** 2 + vertical ** 2 + eps).mean()
