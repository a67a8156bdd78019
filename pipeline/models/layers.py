"""Layers the papers share: self-attention (paper 000 eq. 1 and SAGAN), batch-instance norm,
depthwise-separable convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention2d(nn.Module):
    """F_out = lambda * act(Q K^T) V + F over the H*W positions of a feature map.

    `activation="sigmoid"` is paper 000's eq. 1 (SOCLNET, IFACENET's level-1 fusion);
    `"softmax"` is the SAGAN block paper 003 puts in EN4/EN5. lambda starts at 0, so the block
    begins as the identity and learns how much attention to mix in.
    """

    def __init__(self, channels: int, activation: str = "sigmoid", reduction: int = 8) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        inner = max(1, channels // reduction)
        self.activation = activation
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.attention_scale = nn.Parameter(torch.zeros(1))  # lambda in eq. 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        query = self.query(features).flatten(2).transpose(1, 2)        # (B, N, C')
        key = self.key(features).flatten(2)                            # (B, C', N)
        value = self.value(features).flatten(2)                        # (B, C, N)
        scores = torch.bmm(query, key)                                 # (B, N, N)
        weights = torch.sigmoid(scores) if self.activation == "sigmoid" else torch.softmax(scores, dim=-1)
        attended = torch.bmm(value, weights.transpose(1, 2))           # (B, C, N)
        return self.attention_scale * attended.view(batch, channels, height, width) + features


class BatchInstanceNorm2d(nn.Module):
    """Batch-instance normalisation (Nam & Kim 2018): rho * BN(x) + (1 - rho) * IN(x), rho in [0, 1]
    learned per channel, then one affine transform.

    rho is used as it is in `forward` and clipped to [0, 1] after each optimizer step
    (`clip_batch_instance_gates`), as in the paper: clamping it in `forward` would zero its gradient
    at the bounds, so a gate that reached 1 (its initial value) could never move back.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.eps = eps
        self.rho = nn.Parameter(torch.ones(channels))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rho = self.rho.view(1, -1, 1, 1)
        instance = F.instance_norm(x, eps=self.eps)
        mixed = rho * self.batch_norm(x) + (1 - rho) * instance
        return mixed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@torch.no_grad()
def clip_batch_instance_gates(network: nn.Module) -> None:
    """Clip the gate rho of every BatchInstanceNorm2d in `network` to [0, 1], in place."""
    for module in network.modules():
        if isinstance(module, BatchInstanceNorm2d):
            module.rho.clamp_(0, 1)


class DepthwiseSeparableConv2d(nn.Module):
    """A depthwise 3x3 convolution then a pointwise 1x1 one."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                                   groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))
