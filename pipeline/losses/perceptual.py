"""Perceptual and style (Gram) losses on VGG19 activations (paper 000 eqs. 8-9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import vgg19

from pipeline.models.pretrained import imagenet_state_dict

# Index of each ReLU and max-pool in torchvision's vgg19().features: paper 000 takes relu*_1,
# paper 004 (ISNet) pool1-pool3.
VGG19_LAYERS = {"relu1_1": 1, "relu1_2": 3, "pool1": 4, "relu2_1": 6, "relu2_2": 8, "pool2": 9, "relu3_1": 11,
                "relu3_2": 13, "relu3_3": 15, "relu3_4": 17, "pool3": 18, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24,
                "relu4_4": 26, "pool4": 27, "relu5_1": 29, "relu5_2": 31}
WEIGHT_CHOICES = ("imagenet", "random", "none")


class VGG19Features(nn.Module):
    """Frozen VGG19 truncated after the deepest requested layer; returns those activations.

    `weights="imagenet"` loads the ImageNet file from the torch cache; `"random"` is the explicit
    fallback when no weights can be had: a fixed, seeded, untrained VGG19.
    """

    def __init__(self, layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 weights: str = "imagenet", seed: int = 0) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {list(VGG19_LAYERS)}")
        if weights not in ("imagenet", "random"):
            raise ValueError(f"VGG19 weights must be 'imagenet' or 'random', got {weights!r}")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            network = vgg19()
        if weights == "imagenet":
            network.load_state_dict(imagenet_state_dict("vgg19"))
        self.layer_indices = [VGG19_LAYERS[name] for name in layers]
        self.features = network.features[: max(self.layer_indices) + 1].eval().requires_grad_(False)
        self.weights = weights
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGG19Features":
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        activations = []
        x = (image - self.mean) / self.std
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layer_indices:
                activations.append(x)
        return activations


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), divided by C*H*W (N_j in eq. 9)."""
    batch, channels, height, width = features.shape
    flat = features.flatten(2)
    return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def perceptual_and_style(extractor: VGG19Features, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean over layers of the L1 distance of activations (eq. 8) and of their Gram matrices (eq. 9)."""
    predicted_features = extractor(prediction)
    with torch.no_grad():
        target_features = extractor(target)
    perceptual = sum(F.l1_loss(p, t) for p, t in zip(predicted_features, target_features)) / len(predicted_features)
    style = sum(F.l1_loss(gram_matrix(p), gram_matrix(t)) for p, t in zip(predicted_features, target_features))
    return {"perceptual": perceptual, "style": style / len(predicted_features)}
