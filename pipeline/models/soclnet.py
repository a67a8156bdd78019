"""SOCLNET (paper 000): torchvision's DeepLabV3 on a ResNet-50 backbone with the sigmoid
self-attention of eq. 1 on the ASPP context features; 3 classes background / face / occluder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

from pipeline.models.layers import SelfAttention2d
from pipeline.models.pretrained import imagenet_state_dict
from pipeline.models.registry import register_model

RESNET50_LAYERS = (3, 4, 6, 3)


class AttentionDeepLabHead(nn.Sequential):
    """DeepLabHead with the self-attention block between ASPP and the classifier."""

    def __init__(self, in_channels: int, num_classes: int, aspp_channels: int, atrous_rates: Sequence[int]) -> None:
        super().__init__(
            ASPP(in_channels, list(atrous_rates), aspp_channels),
            SelfAttention2d(aspp_channels, activation="sigmoid"),
            nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp_channels),
            nn.ReLU(),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )


class SOCLNet(nn.Module):
    """Occluded image (B, 3, H, W) -> logits (B, 3, H, W) for background, face, occluder."""

    num_classes = 3

    def __init__(self, backbone_layers: Sequence[int] = RESNET50_LAYERS, aspp_channels: int = 256,
                 atrous_rates: Sequence[int] = (12, 24, 36), pretrained: bool = False, output_stride: int = 8,
                 width_per_group: int = 64) -> None:
        super().__init__()
        # Output stride 8 (dilated layer3 and layer4) is torchvision's DeepLabV3; 16 dilates layer4 only.
        dilation = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}
        if output_stride not in dilation:
            raise ValueError(f"output_stride must be one of {sorted(dilation)}, got {output_stride}")
        if pretrained and width_per_group != 64:
            raise ValueError("pretrained ResNet-50 weights need width_per_group 64")
        resnet = ResNet(Bottleneck, list(backbone_layers), replace_stride_with_dilation=dilation[output_stride],
                        width_per_group=width_per_group)
        if pretrained:
            if tuple(backbone_layers) != RESNET50_LAYERS:
                raise ValueError(f"pretrained weights exist for ResNet-50 layers {RESNET50_LAYERS}, not {tuple(backbone_layers)}")
            resnet.load_state_dict(imagenet_state_dict("resnet50"))
        backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
        self.deeplab = DeepLabV3(backbone, AttentionDeepLabHead(2048, self.num_classes, aspp_channels, atrous_rates))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def attention(self) -> SelfAttention2d:
        return self.deeplab.classifier[1]

    def forward(self, occluded_image: torch.Tensor) -> torch.Tensor:
        return self.deeplab((occluded_image - self.mean) / self.std)["out"]


@register_model("soclnet", task="segmenter")
def soclnet(backbone_layers: Sequence[int] = RESNET50_LAYERS, aspp_channels: int = 256,
            atrous_rates: Sequence[int] = (12, 24, 36), pretrained: bool = False, output_stride: int = 8,
            width_per_group: int = 64) -> SOCLNet:
    """Paper 000: DeepLabV3-ResNet50 + sigmoid self-attention (eq. 1), 3 classes."""
    return SOCLNet(backbone_layers, aspp_channels, atrous_rates, pretrained, output_stride, width_per_group)
