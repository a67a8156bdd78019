"""Training-time augmentation shared by the LightningModules."""

from __future__ import annotations

import torch


def flip_half(batch: dict[str, torch.Tensor], step: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The batch with a random half of its samples mirrored left-right, every image, mask and label
    map alike; which half is drawn from (seed, step), so a resumed run flips as an uninterrupted one."""
    size = next(iter(batch.values())).shape[0]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    chosen = (torch.rand(size, generator=generator) < 0.5).to(next(iter(batch.values())).device)
    return {key: torch.where(chosen.view(-1, *([1] * (value.dim() - 1))), value.flip(-1), value)
            for key, value in batch.items()}
