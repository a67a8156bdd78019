"""IFACENET (paper 000): an ensemble encoder (TraResNet + Shallower fused by eq. 1 attention), a
dilated context block (r = 1, 2, 4) and a transposed-convolution decoder; plus the five-conv
PatchGAN discriminator (30x30 patches at 256x256)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.models.layers import DepthwiseSeparableConv2d, SelfAttention2d
from pipeline.models.pretrained import imagenet_state_dict
from pipeline.models.registry import register_model
from torchvision.models.resnet import Bottleneck, ResNet

RESNET50_LAYERS = (3, 4, 6, 3)


class TraResNet(nn.Module):
    """ResNet-50 without its classifier (stride 32, 2048 channels) and two transposed convolutions
    back to stride 8. Pretrained, only its last two stages (layer3, layer4) are trained."""

    def __init__(self, out_channels: int = 256, layers: Sequence[int] = RESNET50_LAYERS, pretrained: bool = False,
                 width_per_group: int = 64, freeze_stem: bool | None = None) -> None:
        super().__init__()
        resnet = ResNet(Bottleneck, list(layers), width_per_group=width_per_group)
        if pretrained:
            if tuple(layers) != RESNET50_LAYERS or width_per_group != 64:
                raise ValueError("pretrained weights exist only for the full ResNet-50 (layers 3,4,6,3, width 64)")
            resnet.load_state_dict(imagenet_state_dict("resnet50"))
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2)
        self.stages = nn.Sequential(resnet.layer3, resnet.layer4)
        # Frozen when pretrained, and stays frozen when a checkpoint rebuilds it without the weights.
        self.freeze_stem = pretrained if freeze_stem is None else freeze_stem
        if self.freeze_stem:
            self.stem.requires_grad_(False)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2048, out_channels * 2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(out_channels * 2, out_channels, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "TraResNet":
        super().train(mode)
        if self.freeze_stem:
            self.stem.eval()  # frozen layers keep their batch-norm statistics too
        return self

    def forward(self, masked_input: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.stages(self.stem((masked_input - self.mean) / self.std)))   # (B, C, H/8, W/8)


class Shallower(nn.Module):
    """Four depthwise-separable convolutions, each followed by ReLU; stride 8 overall."""

    def __init__(self, out_channels: int = 128, width: int = 32) -> None:
        super().__init__()
        channels = [3, width, width * 2, width * 4, out_channels]
        strides = [2, 2, 2, 1]
        self.layers = nn.Sequential(*[
            module for i in range(4)
            for module in (DepthwiseSeparableConv2d(channels[i], channels[i + 1], stride=strides[i]), nn.ReLU(inplace=True))
        ])

    def forward(self, masked_input: torch.Tensor) -> torch.Tensor:
        return self.layers(masked_input * 2 - 1)                                               # (B, C, H/8, W/8)


class ContextBlock(nn.Module):
    """Three depthwise-separable convolutions with dilation 1, 2 and 4, concatenated."""

    def __init__(self, in_channels: int, branch_channels: int, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(DepthwiseSeparableConv2d(in_channels, branch_channels, dilation=d), nn.ReLU(inplace=True))
            for d in dilations)
        self.out_channels = branch_channels * len(dilations)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(features) for branch in self.branches], dim=1)


class IFaceNet(nn.Module):
    """(image, mask) -> reconstructed image I' (B, 3, H, W) in [0, 1]; H and W divisible by 32.

    The ablations of the paper drop TraResNet, Shallower, or the attention fusion (plain concatenation).
    """

    def __init__(self, tra_channels: int = 256, shallow_channels: int = 128, shallow_width: int = 32,
                 context_channels: int = 128, decoder_channels: int = 128, resnet_layers: Sequence[int] = RESNET50_LAYERS,
                 resnet_width_per_group: int = 64, pretrained: bool = False, use_traresnet: bool = True,
                 use_shallower: bool = True, use_attention: bool = True, freeze_stem: bool | None = None) -> None:
        super().__init__()
        if not (use_traresnet or use_shallower):
            raise ValueError("IFACENET needs at least one of TraResNet and Shallower")
        self.traresnet = (TraResNet(tra_channels, resnet_layers, pretrained, resnet_width_per_group, freeze_stem)
                          if use_traresnet else None)
        self.shallower = Shallower(shallow_channels, shallow_width) if use_shallower else None
        fused = tra_channels * use_traresnet + shallow_channels * use_shallower
        self.fusion = SelfAttention2d(fused, activation="sigmoid") if use_attention else nn.Identity()   # level-1 model
        self.context = ContextBlock(fused, context_channels)
        d = decoder_channels
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(self.context.out_channels, d, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(d, d // 2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(d // 2, d // 4, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(d // 4, 3, 3, padding=1),
        )

    def encode(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (latent F_N1 (B, C, H/8, W/8), skips: none, the decoder reads the latent alone)."""
        height, width = image.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"input {height}x{width} must be divisible by 32 (ResNet stride)")
        masked_input = image * (1 - occluder_mask) + occluder_mask                 # I_m, eq. 2
        level0 = [m(masked_input) for m in (self.traresnet, self.shallower) if m is not None]
        return self.fusion(torch.cat(level0, dim=1)), []                            # F_N1, eqs. 5-6

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.context(latent)))

    def forward(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(image, occluder_mask))


class PatchDiscriminator(nn.Module):
    """Five 4x4 convolutions (strides 2, 2, 2, 1, 1): a 30x30 map of real/fake logits at 256x256."""

    def __init__(self, width: int = 64, in_channels: int = 3, use_spectral_norm: bool = False) -> None:
        super().__init__()
        wrap = spectral_norm if use_spectral_norm else (lambda module: module)
        channels = [in_channels, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for i, stride in enumerate((2, 2, 2, 1)):
            layers.append(wrap(nn.Conv2d(channels[i], channels[i + 1], 4, stride=stride, padding=1)))
            if i > 0 and not use_spectral_norm:
                layers.append(nn.BatchNorm2d(channels[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(wrap(nn.Conv2d(channels[-1], 1, 4, stride=1, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image * 2 - 1)


@register_model("ifacenet", task="inpainter")
def ifacenet(**kwargs: object) -> IFaceNet:
    """Paper 000: ensemble encoder (TraResNet + Shallower + attention), dilated context, TConv decoder."""
    return IFaceNet(**kwargs)


@register_model("ifacenet-no-traresnet", task="inpainter")
def ifacenet_no_traresnet(**kwargs: object) -> IFaceNet:
    """Paper 000 ablation: IFACENET without TraResNet."""
    return IFaceNet(**{**kwargs, "use_traresnet": False})


@register_model("ifacenet-no-shallower", task="inpainter")
def ifacenet_no_shallower(**kwargs: object) -> IFaceNet:
    """Paper 000 ablation: IFACENET without Shallower."""
    return IFaceNet(**{**kwargs, "use_shallower": False})


@register_model("ifacenet-no-attention", task="inpainter")
def ifacenet_no_attention(**kwargs: object) -> IFaceNet:
    """Paper 000 ablation: IFACENET without the attention fusion (concatenation only)."""
    return IFaceNet(**{**kwargs, "use_attention": False})


@register_model("patchgan", task="discriminator")
def patchgan(width: int = 64, in_channels: int = 3, use_spectral_norm: bool = False) -> PatchDiscriminator:
    """Paper 000: five-conv PatchGAN discriminator, 30x30 output at 256x256."""
    return PatchDiscriminator(width, in_channels, use_spectral_norm)
