"""ImageNet weights from the local torch cache only: a missing file is an error, never a download."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import ResNet50_Weights, VGG19_Weights

IMAGENET_WEIGHTS = {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}


class PretrainedWeightsMissing(FileNotFoundError):
    """Pretrained weights were requested but are not in the local torch cache."""


def weight_file(name: str) -> Path:
    """Where torchvision keeps the file: $TORCH_HOME/hub/checkpoints/<file> (TORCH_HOME defaults to ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_WEIGHTS[name].url.rsplit("/", 1)[-1]


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    path = weight_file(name)
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"{path}: ImageNet weights for {name} not found. Download {IMAGENET_WEIGHTS[name].url} on a machine "
            f"with internet and copy it there (or point TORCH_HOME at a cache holding it), or set pretrained: false")
    return torch.load(path, map_location="cpu", weights_only=True)
