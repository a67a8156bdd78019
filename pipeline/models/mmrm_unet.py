"""MMRM U-Net GAN (paper 002): a U-Net generator whose down- and up-sampling modules are
multi-scale mixed-attention residual modules, and a four-conv spectral-norm PatchGAN.

An MMRM runs three convolution branches (1x1, 3x3, 5x5) side by side, weights the 3x3 and 5x5
branches by spatial attention, concatenates them, weights the channels by channel attention and adds
a residual shortcut. The up-sampling path also weights the concatenation of the skip and the
up-sampled features by channel attention. The paper names its attention modules by citation:
spatial attention after [25] (a sigmoid map from the channel-wise mean and max), channel attention
after ECA-Net [26] (a 1-D convolution across the pooled channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.models.face_prior import EigenfacePrior
from pipeline.models.registry import register_model

LEAKY_SLOPE = 0.2


class SpatialAttention(nn.Module):
    """x * sigmoid(conv7x7([mean_c(x), max_c(x)])): where in the image to look."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class ChannelAttention(nn.Module):
    """ECA: x * sigmoid(conv1d_k(avgpool(x))) across channels, no dimensionality reduction."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.conv(x.mean(dim=(2, 3)).unsqueeze(1))          # (B, 1, C)
        return x * torch.sigmoid(weights).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)


def _conv_norm_act(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(LEAKY_SLOPE, inplace=True))


class MixedAttentionResidual(nn.Module):
    """MMRM: branches 1x1 | 3x3 + spatial attention | 5x5 + spatial attention, concatenated, channel
    attention, a 1x1 fusion, plus the (strided 1x1) shortcut. `stride` 2 halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, spatial_attention: bool = True,
                 channel_attention: bool = True) -> None:
        super().__init__()
        branch = max(out_channels // 2, 8)
        self.branches = nn.ModuleList(
            nn.Sequential(_conv_norm_act(in_channels, branch, k, stride),
                          SpatialAttention() if spatial_attention and k > 1 else nn.Identity())
            for k in (1, 3, 5))
        self.channel_attention = ChannelAttention() if channel_attention else nn.Identity()
        self.fuse = nn.Sequential(nn.Conv2d(3 * branch, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.channel_attention(torch.cat([branch(x) for branch in self.branches], dim=1))
        return F.leaky_relu(self.fuse(mixed) + self.shortcut(x), LEAKY_SLOPE)


class PlainBlock(nn.Sequential):
    """The `without MMRM` ablation: one 3x3 convolution, batch norm, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **_: bool) -> None:
        super().__init__(*_conv_norm_act(in_channels, out_channels, 3, stride))


class UpModule(nn.Module):
    """x2 bilinear up-sampling, concatenation with the skip, channel attention, then an MMRM."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, block: type[nn.Module],
                 skip_attention: bool, **block_kwargs: bool) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention() if skip_attention else nn.Identity()
        self.block = block(in_channels + skip_channels, out_channels, **block_kwargs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.channel_attention(torch.cat([x, skip], dim=1)))


def _laplacian(image: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian with the border replicated (slices: a grouped convolution is ~7x slower on CPU)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    return (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) - 4 * image


def _relax_harmonic(image: torch.Tensor, hole: torch.Tensor, iterations: int) -> torch.Tensor:
    """Jacobi steps of Laplace's equation inside `hole`: each hidden pixel becomes its four neighbours' mean."""
    for _ in range(iterations):
        image = torch.where(hole, image + _laplacian(image) / 4, image)
    return image


def _relax_biharmonic(image: torch.Tensor, hole: torch.Tensor, iterations: int) -> torch.Tensor:
    """Damped Jacobi steps of the biharmonic equation inside `hole` (13-point stencil, diagonal 20,
    damping 0.5: undamped Jacobi diverges on its highest frequencies)."""
    for _ in range(iterations):
        image = torch.where(hole, image - _laplacian(_laplacian(image)) / 40, image)
    return image


RELAXATION_STEPS = {"harmonic": 5, "biharmonic": 50}   # a level, by default
HOLE_FILLS = ("white", "smooth", "biharmonic", "eigenface")


def smooth_fill(image: torch.Tensor, occluder_mask: torch.Tensor, iterations: int | None = None,
                equation: str = "harmonic") -> torch.Tensor:
    """Fill the hidden pixels smoothly from the known ones, solved coarse to fine: known-weighted 2x2
    means down to 1x1, then at each finer level the hidden cells start from the up-sampled coarser
    solution and relax `iterations` Jacobi steps of Laplace's (`harmonic`, 5 steps by default) or the
    biharmonic equation (50 steps). The biharmonic steps stop well short of the exact solve on
    purpose: on the quick profile's validation faces the relaxed fill scores 17.69 dB inside the mask
    against 17.29 for the exact biharmonic solve and 17.28 for the harmonic fill (Telea 16.68).
    In fp32 on any device; a fully hidden image comes back mid-grey."""
    if equation not in ("harmonic", "biharmonic"):
        raise ValueError(f"smooth_fill: equation must be 'harmonic' or 'biharmonic', got {equation!r}")
    relax = _relax_harmonic if equation == "harmonic" else _relax_biharmonic
    if iterations is None:
        iterations = RELAXATION_STEPS[equation]
    with torch.autocast(image.device.type, enabled=False):
        known = (occluder_mask <= 0).float()                 # any mask value above 0 hides the pixel
        image = image.float()
        images, weights = [image * known], [known]
        while min(images[-1].shape[-2:]) > 1:
            weight = F.avg_pool2d(weights[-1], 2, ceil_mode=True)
            images.append(F.avg_pool2d(images[-1] * weights[-1], 2, ceil_mode=True) / weight.clamp_min(1e-6))
            weights.append(weight)
        filled = torch.where(weights[-1] > 0, images[-1], torch.full_like(images[-1], 0.5))
        for level_image, level_weight in zip(reversed(images[:-1]), reversed(weights[:-1])):
            coarse = F.interpolate(filled, size=level_image.shape[-2:], mode="bilinear", align_corners=False)
            hole = (level_weight == 0).expand_as(level_image)
            filled = relax(torch.where(hole, coarse, level_image), hole, iterations)
        return filled


class MMRMUNet(nn.Module):
    """(image, occluder mask) -> restored image (B, 3, H, W) in [0, 1]; H and W divisible by 2**depth.

    `hole_fill: white` is the paper's input: the occluded face with the hidden pixels set to white,
    as in paper 000's eq. 2 (paper 002 feeds the masked photograph itself). `smooth` fills the hole
    by `smooth_fill`'s harmonic fill, `biharmonic` by its relaxed biharmonic one (0.4 dB higher with
    exact masks, lower with predicted ones, whose missed occluder edges it extends; about 10x the
    fill's time); `eigenface` by an `EigenfacePrior` of `prior_components` principal directions of
    the training faces, which the training stage fits before the first step (0.9 dB above the
    harmonic fill with exact and 0.4 dB with predicted masks). All three add the mask as a fourth
    input channel and predict a correction of that fill (in logit space, zero at initialisation):
    the network starts at an in-fill instead of learning one. `width * 2**level` channels, capped at `max_channels`, at each of `depth`
    down-sampling levels.
    """

    def __init__(self, width: int = 64, depth: int = 6, max_channels: int = 512, use_mmrm: bool = True,
                 spatial_attention: bool = True, channel_attention: bool = True,
                 up_channel_attention: bool = True, hole_fill: str = "white", prior_components: int = 256,
                 prior_strength: float = 0.3) -> None:
        super().__init__()
        if hole_fill not in HOLE_FILLS:
            raise ValueError(f"hole_fill must be one of {', '.join(map(repr, HOLE_FILLS))}, got {hole_fill!r}")
        block: type[nn.Module] = MixedAttentionResidual if use_mmrm else PlainBlock
        attention = {"spatial_attention": spatial_attention, "channel_attention": channel_attention}
        channels = [min(width * 2 ** level, max_channels) for level in range(depth + 1)]
        self.depth = depth
        self.hole_fill = hole_fill
        self.face_prior = EigenfacePrior(prior_components, prior_strength) if hole_fill == "eigenface" else None
        self.stem = block(3 if hole_fill == "white" else 4, channels[0], **attention)
        self.down = nn.ModuleList(block(channels[i], channels[i + 1], stride=2, **attention) for i in range(depth))
        self.up = nn.ModuleList(UpModule(channels[i + 1], channels[i], channels[i], block, up_channel_attention, **attention)
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], 3, 3, padding=1)
        if hole_fill != "white":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def encode(self, image: torch.Tensor, occluder_mask: torch.Tensor,
               base: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (the deepest features (B, C, H/2^depth, W/2^depth), the skips from full resolution down).
        `base`: `fill_base`'s result when the caller has it already (any hole_fill but white)."""
        height, width = image.shape[-2:]
        if height % 2 ** self.depth or width % 2 ** self.depth:
            raise ValueError(f"input {height}x{width} must be divisible by {2 ** self.depth} (depth {self.depth})")
        if self.hole_fill == "white":
            features = self.stem((image * (1 - occluder_mask) + occluder_mask) * 2 - 1)
        else:
            base = self.fill_base(image, occluder_mask) if base is None else base
            features = self.stem(torch.cat([base * 2 - 1, occluder_mask * 2 - 1], dim=1))
        skips = [features]
        for down in self.down:
            features = down(features)
            skips.append(features)
        return skips[-1], skips[:-1]

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor], base: torch.Tensor | None = None) -> torch.Tensor:
        """`base`: the fill the head corrects (any hole_fill but white), None for the paper's output."""
        features, skips = latent, list(skips)
        for up in self.up:
            features = up(features, skips.pop())
        if base is None:
            return (torch.tanh(self.head(features)) + 1) / 2
        return torch.sigmoid(torch.logit(base.clamp(1e-3, 1 - 1e-3)) + self.head(features))

    def fill_base(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor | None:
        """What `decode` corrects: the hole's fill (hole_fill smooth, biharmonic or eigenface), else None."""
        if self.hole_fill == "white":
            return None
        if self.face_prior is not None:
            return self.face_prior.fill(image, occluder_mask)
        return smooth_fill(image, occluder_mask, equation="harmonic" if self.hole_fill == "smooth" else "biharmonic")

    def forward(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        base = self.fill_base(image, occluder_mask)
        return self.decode(*self.encode(image, occluder_mask, base), base=base)


class SpectralPatchDiscriminator(nn.Module):
    """Paper 002's discriminator: four spectral-norm 3x3 stride-2 convolutions; an (H/16, W/16) map
    of real/fake logits."""

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        channels = [in_channels, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [spectral_norm(nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1)),
                       nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(channels[-1], 1, 3, stride=2, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image * 2 - 1)


@register_model("mmrm-unet", task="inpainter")
def mmrm_unet(**kwargs: object) -> MMRMUNet:
    """Paper 002: U-Net of multi-scale mixed-attention residual modules, channel attention on the way up."""
    return MMRMUNet(**kwargs)


@register_model("mmrm-unet-no-spatial-attention", task="inpainter")
def mmrm_unet_no_spatial_attention(**kwargs: object) -> MMRMUNet:
    """Paper 002 ablation: MMRM without spatial attention in its 3x3 and 5x5 branches."""
    return MMRMUNet(**{**kwargs, "spatial_attention": False})


@register_model("mmrm-unet-no-channel-attention", task="inpainter")
def mmrm_unet_no_channel_attention(**kwargs: object) -> MMRMUNet:
    """Paper 002 ablation: MMRM without channel attention after the concatenation."""
    return MMRMUNet(**{**kwargs, "channel_attention": False})


@register_model("mmrm-unet-no-mmrm", task="inpainter")
def mmrm_unet_no_mmrm(**kwargs: object) -> MMRMUNet:
    """Paper 002 ablation: plain convolution blocks in place of every MMRM."""
    return MMRMUNet(**{**kwargs, "use_mmrm": False})


@register_model("mmrm-unet-no-up-channel-attention", task="inpainter")
def mmrm_unet_no_up_channel_attention(**kwargs: object) -> MMRMUNet:
    """Paper 002 ablation: no channel attention on the up-sampling path."""
    return MMRMUNet(**{**kwargs, "up_channel_attention": False})


@register_model("sn-patchgan", task="discriminator")
def sn_patchgan(width: int = 64, in_channels: int = 3) -> SpectralPatchDiscriminator:
    """Paper 002: four spectral-norm 3x3 stride-2 convolutions."""
    return SpectralPatchDiscriminator(width, in_channels)
