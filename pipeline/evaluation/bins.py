"""Mask-ratio bins (paper 000's Table II: 1-10 % ... 50-60 %): which bin each image falls in, and names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskRatioBin:
    low: float
    high: float

    @property
    def label(self) -> str:
        return f"{self.low:.0%}-{self.high:.0%}"

    @property
    def midpoint_percent(self) -> float:
        """A number for a plot's x axis (DVC's templates read "1%-10%" as text, not as a position)."""
        return round((self.low + self.high) * 50, 4)


def mask_ratio_bins(edges: Sequence[float]) -> list[MaskRatioBin]:
    return [MaskRatioBin(low, high) for low, high in zip(edges[:-1], edges[1:])]


def bin_index(mask_ratio: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """(N,) ratios -> (N,) bin numbers; bins are [low, high) except the last, which holds its upper
    edge too; -1 for a ratio outside every bin."""
    index = torch.full(mask_ratio.shape, -1, dtype=torch.long)
    last = len(edges) - 2
    for number, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (mask_ratio >= low) & ((mask_ratio < high) | ((number == last) & (mask_ratio <= high)))
        index[inside] = number
    return index


def bin_labels(mask_ratio: torch.Tensor, edges: Sequence[float]) -> list[str]:
    """Each ratio's bin label, "" outside every bin."""
    names = [b.label for b in mask_ratio_bins(edges)]
    return [names[i] if i >= 0 else "" for i in bin_index(mask_ratio, edges).tolist()]
