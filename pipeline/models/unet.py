"""Small UNets: the baseline occluder segmenter and the baseline masked-face inpainter."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.registry import register_model


class ConvBlock(nn.Module):
    """Two 3x3 conv + norm + activation layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(max(1, out_channels // 8), out_channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(max(1, out_channels // 8), out_channels),
            nn.SiLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; `depth` halvings, channels doubling from `width`."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        channels = [width * 2 ** level for level in range(depth + 1)]
        self.downsample_factor = 2 ** depth
        self.stem = ConvBlock(in_channels, channels[0])
        self.encoders = nn.ModuleList(ConvBlock(channels[i], channels[i + 1]) for i in range(depth))
        self.upsamplers = nn.ModuleList(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth)))
        self.decoders = nn.ModuleList(ConvBlock(channels[i] * 2, channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (bottleneck (B, w*2^depth, H/2^depth, W/2^depth), skips from full resolution down)."""
        height, width = x.shape[-2:]
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(f"input {height}x{width} must be divisible by {self.downsample_factor}")
        skips = [self.stem(x)]                                  # (B, w, H, W)
        for encoder in self.encoders:
            skips.append(encoder(nn.functional.max_pool2d(skips[-1], 2)))  # (B, w*2^k, H/2^k, W/2^k)
        return skips[-1], skips[:-1]

    def decode(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        features, skips = bottleneck, list(skips)
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            features = decoder(torch.cat([upsample(features), skips.pop()], dim=1))
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))


def compose_known_pixels(prediction: torch.Tensor, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
    """Keep the known pixels of `image`, take the prediction where the mask hides the face."""
    return prediction * occluder_mask + image * (1 - occluder_mask)


class UNetSegmenter(nn.Module):
    """Occluded RGB image -> occluder logits (B, 1, H, W)."""

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.unet = UNet(3, 1, width, depth)

    def forward(self, occluded_image: torch.Tensor) -> torch.Tensor:
        return self.unet(occluded_image * 2 - 1)


class UNetInpainter(nn.Module):
    """(image, mask) -> a full predicted image (B, 3, H, W) in [0, 1]; see `compose_known_pixels`.

    The input follows the de-occlusion convention I_m = I * (1 - m) + m: hidden pixels set to white.
    """

    def __init__(self, width: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.unet = UNet(4, 3, width, depth)

    def encode(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (the UNet's bottleneck, its skip features)."""
        masked_input = image * (1 - occluder_mask) + occluder_mask
        return self.unet.encode(torch.cat([masked_input * 2 - 1, occluder_mask], dim=1))

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.unet.decode(latent, skips))

    def forward(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(image, occluder_mask))


@register_model("unet-small", task="segmenter")
def unet_small(width: int = 16, depth: int = 3) -> UNetSegmenter:
    """Baseline UNet occluder segmenter (binary mask logits)."""
    return UNetSegmenter(width=width, depth=depth)


@register_model("unet-inpainter", task="inpainter")
def unet_inpainter(width: int = 24, depth: int = 3) -> UNetInpainter:
    """Baseline UNet inpainter over image + mask, known pixels kept."""
    return UNetInpainter(width=width, depth=depth)
