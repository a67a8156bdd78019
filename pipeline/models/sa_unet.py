"""Paper 003's occluder segmenter: a UNet with 5 encoder, 2 bottleneck and 5 decoder blocks,
spectral norm, batch-instance norm, leaky ReLU, and self-attention in place of the first
convolution of EN4 and EN5; one sigmoid output channel trained with BCE. `classes=3` gives it paper 000's
background / face / occluder outputs instead (one-hot BCE, the occluder last), so that the mean IoU
over the three classes can be measured."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.models.layers import BatchInstanceNorm2d, SelfAttention2d
from pipeline.models.registry import register_model

LEAKY_SLOPE = 0.2


class ConvBINAct(nn.Module):
    """3x3 convolution with spectral norm, batch-instance norm, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.norm = BatchInstanceNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), LEAKY_SLOPE)


class EncoderBlock(nn.Module):
    """Two conv sub-blocks (the first a self-attention block in EN4/EN5); pooling is applied after."""

    def __init__(self, in_channels: int, out_channels: int, attention: bool) -> None:
        super().__init__()
        if attention:
            self.first = nn.Sequential(SelfAttention2d(in_channels, activation="softmax"),
                                       ConvBINAct(in_channels, out_channels))
            self.second: nn.Module = nn.Identity()
        else:
            self.first = ConvBINAct(in_channels, out_channels)
            self.second = ConvBINAct(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class DecoderBlock(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation with the skip, two conv sub-blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = spectral_norm(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2))
        self.convs = nn.Sequential(ConvBINAct(out_channels + skip_channels, out_channels),
                                   ConvBINAct(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.upsample(x), skip], dim=1))


class SelfAttentionUNet(nn.Module):
    """Occluded image (B, 3, H, W) -> logits (B, classes, H, W), the occluder's last; H and W divisible by 32."""

    def __init__(self, width: int = 32, max_channels: int = 512, classes: int = 1) -> None:
        super().__init__()
        if classes not in (1, 3):
            raise ValueError(f"classes must be 1 (occluder) or 3 (background, face, occluder), got {classes!r}")
        self.num_classes = classes
        channels = [min(width * 2 ** level, max_channels) for level in range(5)]   # EN1..EN5
        bottleneck = channels[-1]  # width 32 gives 17.77 M parameters; the paper reports 17.66 M
        self.encoders = nn.ModuleList(
            EncoderBlock(3 if i == 0 else channels[i - 1], channels[i], attention=i >= 3) for i in range(5))
        self.bottleneck = nn.Sequential(ConvBINAct(channels[-1], bottleneck), ConvBINAct(bottleneck, bottleneck))
        decoder_in = [bottleneck, *reversed(channels[1:])]
        self.decoders = nn.ModuleList(
            DecoderBlock(decoder_in[k], skip, skip) for k, skip in enumerate(reversed(channels)))  # DEC5..DEC1
        self.head = nn.Conv2d(channels[0], classes, 1)

    def forward(self, occluded_image: torch.Tensor) -> torch.Tensor:
        height, width = occluded_image.shape[-2:]
        if height % 32 or width % 32 or min(height, width) < 64:
            raise ValueError(f"input {height}x{width} must be divisible by 32 and at least 64 "
                             "(five 2x2 poolings must leave instance norm more than one pixel)")
        skips = []
        features = occluded_image * 2 - 1
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
            features = F.max_pool2d(features, 2)
        features = self.bottleneck(features)
        for decoder in self.decoders:
            features = decoder(features, skips.pop())
        # Logits: the paper's sigmoid output is applied inside BCE-with-logits and at prediction.
        return self.head(features)


@register_model("sa-unet", task="segmenter")
def sa_unet(width: int = 32, max_channels: int = 512, classes: int = 1) -> SelfAttentionUNet:
    """Paper 003: self-attention UNet (5 EN / 2 BN / 5 DEC, spectral + batch-instance norm)."""
    return SelfAttentionUNet(width=width, max_channels=max_channels, classes=classes)
