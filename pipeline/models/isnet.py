"""ISNet (paper 004): the Interactive Separation Network, a two-branch generator, and its
spectral-norm PatchGAN discriminator trained with the hinge loss.

One branch keeps the full resolution throughout; the other halves its resolution and doubles its
channels at every phase. Each of the four phases runs three operations (section III-A, Figure 4):
Inpainting, residual blocks on each branch; Interaction, the low branch goes down by a stride-2
convolution and takes the high branch brought down by n stride-2 convolutions (phase n), while the
high branch takes the low branch brought up by n - 1 sub-pixel convolutions; Aggregation, a 3x3
convolution per branch back to the phase's channels (32 at full resolution, 64 / 128 / 256 / 512
below). Final Fusion brings the low branch up to full resolution through stacked sub-pixel layers,
concatenates it with the high branch, and a 3x3 convolution decodes the image; (tanh + 1) / 2 maps
it to [0, 1]. Every convolution, generator and discriminator, is spectrally normalised (III-B).

The paper names tanh as the generator's intermediate activation; the authors' released code uses
leaky ReLU (0.2): `activation` picks either.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.models.registry import register_model

ACTIVATIONS = {"tanh": nn.Tanh, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def sn_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """A spectrally normalised convolution, zero padding keeping the size (stride 1) or halving it."""
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2))


class ResBlock(nn.Module):
    """x + conv(act(conv(x))), then the activation (the Inpainting operation, after [30])."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(sn_conv(channels, channels), ACTIVATIONS[activation](), sn_conv(channels, channels))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


def strided_down(in_channels: int, out_channels: int, steps: int, activation: str) -> nn.Sequential:
    """`steps` stride-2 convolutions, the channels doubling each step up to `out_channels`."""
    layers: list[nn.Module] = []
    channels = in_channels
    for step in range(steps):
        following = out_channels if step == steps - 1 else min(channels * 2, out_channels)
        layers += [sn_conv(channels, following, 3, stride=2), ACTIVATIONS[activation]()]
        channels = following
    return nn.Sequential(*layers)


def sub_pixel_up(in_channels: int, out_channels: int, steps: int, activation: str,
                 sub_pixel: bool = True) -> nn.Sequential:
    """`steps` x2 up-samplings, the channels halving each step down to `out_channels`: a convolution
    to 4x the channels then PixelShuffle(2) [31], or (the ablation) bilinear then a convolution."""
    layers: list[nn.Module] = []
    channels = in_channels
    for step in range(steps):
        following = out_channels if step == steps - 1 else max(channels // 2, out_channels)
        if sub_pixel:
            layers += [sn_conv(channels, following * 4), nn.PixelShuffle(2)]
        else:
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), sn_conv(channels, following)]
        layers.append(ACTIVATIONS[activation]())
        channels = following
    return nn.Sequential(*layers)


class Phase(nn.Module):
    """Phase `index` (1-based): (high (B, w, H, W), low (B, c_{n-1}, H/2^{n-1}, W/2^{n-1}) or None)
    -> (high (B, w, H, W), low (B, c_n, H/2^n, W/2^n)), with c_n = w * 2^n capped at max_channels."""

    def __init__(self, index: int, width: int, max_channels: int, blocks: int, activation: str, sub_pixel: bool) -> None:
        super().__init__()
        low_in = min(width * 2 ** (index - 1), max_channels)
        low_out = min(width * 2 ** index, max_channels)
        self.first = index == 1
        # Inpainting: phase 1 has only the high branch.
        self.inpaint_high = nn.Sequential(*(ResBlock(width, activation) for _ in range(blocks)))
        self.inpaint_low = None if self.first else nn.Sequential(*(ResBlock(low_in, activation) for _ in range(blocks)))
        # Interaction.
        self.high_down = strided_down(width, low_out, index, activation)               # n stride-2 convs
        self.low_down = None if self.first else nn.Sequential(sn_conv(low_in, low_out, 3, stride=2),
                                                               ACTIVATIONS[activation]())
        self.low_up = None if self.first else sub_pixel_up(low_in, width, index - 1, activation, sub_pixel)
        # Aggregation: 3x3 convolutions back to the branch's channels.
        high_cat = width if self.first else 2 * width
        low_cat = low_out if self.first else 2 * low_out
        self.aggregate_high = nn.Sequential(sn_conv(high_cat, width), ACTIVATIONS[activation]())
        self.aggregate_low = nn.Sequential(sn_conv(low_cat, low_out), ACTIVATIONS[activation]())

    def forward(self, high: torch.Tensor, low: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        high = self.inpaint_high(high)
        if self.first:
            return self.aggregate_high(high), self.aggregate_low(self.high_down(high))
        low = self.inpaint_low(low)
        low_next = torch.cat([self.low_down(low), self.high_down(high)], dim=1)      # (B, 2 c_n, H/2^n, W/2^n)
        high_next = torch.cat([high, self.low_up(low)], dim=1)                       # (B, 2 w, H, W)
        return self.aggregate_high(high_next), self.aggregate_low(low_next)


class ISNet(nn.Module):
    """(image, occluder mask) -> restored image (B, 3, H, W) in [0, 1]; H and W divisible by 2**phases.

    The generator sees the occluded face with the hidden pixels set to white (the repository's
    convention, paper 000's eq. 2; paper 004 feeds I_gt * M, hidden pixels black). `width` is the
    full-resolution branch's channels (32 in the paper), `blocks` the residual blocks per branch and
    phase (the paper's final model: 4, Table 8).
    """

    def __init__(self, width: int = 32, blocks: int = 4, phases: int = 4, max_channels: int = 512,
                 activation: str = "tanh", final_fusion: bool = True, sub_pixel: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"ISNet activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if phases < 1 or blocks < 1:
            raise ValueError(f"ISNet needs phases >= 1 and blocks >= 1, got {phases} and {blocks}")
        self.phases_count = phases
        self.embed = nn.Sequential(sn_conv(3, width), ACTIVATIONS[activation]())
        self.phases = nn.ModuleList(Phase(n, width, max_channels, blocks, activation, sub_pixel)
                                    for n in range(1, phases + 1))
        low_channels = min(width * 2 ** phases, max_channels)
        # Final Fusion; without it (Table 7's "Base Model") the high branch is decoded alone.
        self.fusion_up = sub_pixel_up(low_channels, width, phases, activation, sub_pixel) if final_fusion else None
        self.decode = sn_conv(2 * width if final_fusion else width, 3)

    def forward(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        factor = 2 ** self.phases_count
        if height % factor or width % factor:
            raise ValueError(f"input {height}x{width} must be divisible by {factor} ({self.phases_count} phases)")
        masked_input = image * (1 - occluder_mask) + occluder_mask
        high, low = self.embed(masked_input * 2 - 1), None                            # (B, w, H, W)
        for phase in self.phases:
            high, low = phase(high, low)
        if self.fusion_up is not None:
            high = torch.cat([high, self.fusion_up(low)], dim=1)                      # (B, 2 w, H, W)
        return (torch.tanh(self.decode(high)) + 1) / 2


class ISNetDiscriminator(nn.Module):
    """Paper 004's PatchGAN: three 4x4 stride-2 convolutions, then two 3x3 ones with same padding down
    to one channel; spectral norm on all five. An (H/8, W/8) map of real/fake logits.

    The paper puts a sigmoid after each layer but trains with the hinge loss, which needs unbounded
    scores: leaky ReLU between layers here and logits out, as the hinge loss (and EdgeConnect's
    hinge setting the paper started from) has them."""

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        channels = [in_channels, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [spectral_norm(nn.Conv2d(channels[i], channels[i + 1], 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [sn_conv(width * 4, width * 8), nn.LeakyReLU(0.2, inplace=True), sn_conv(width * 8, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image * 2 - 1)


@register_model("isnet", task="inpainter")
def isnet(pretrained: bool = False, **kwargs: object) -> ISNet:
    """Paper 004: two-branch Interactive Separation Network (full-resolution and down-scaling branches).

    Trained from scratch: `pretrained` (the section's flag) only picks ImageNet VGG19 for the
    perceptual and style terms; ISNet has no backbone to load."""
    return ISNet(**kwargs)


@register_model("isnet-no-final-fusion", task="inpainter")
def isnet_no_final_fusion(pretrained: bool = False, **kwargs: object) -> ISNet:
    """Paper 004 ablation (Table 7): the high-resolution branch decoded alone, no Final Fusion."""
    return ISNet(**{**kwargs, "final_fusion": False})


@register_model("isnet-no-sub-pixel", task="inpainter")
def isnet_no_sub_pixel(pretrained: bool = False, **kwargs: object) -> ISNet:
    """Paper 004 ablation (Table 7): bilinear up-sampling and a convolution in place of sub-pixel layers."""
    return ISNet(**{**kwargs, "sub_pixel": False})


@register_model("isnet-patchgan", task="discriminator")
def isnet_patchgan(width: int = 64, in_channels: int = 3) -> ISNetDiscriminator:
    """Paper 004: spectral-norm PatchGAN, three stride-2 and two same-padding convolutions (hinge loss)."""
    return ISNetDiscriminator(width, in_channels)
