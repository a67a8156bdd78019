"""LPIPS and FID, torchmetrics' implementations, with weights from the local torch cache only.

Both need ImageNet-trained networks (LPIPS an AlexNet, VGG16 or SqueezeNet backbone; FID the
Inception V3 of torch-fidelity). Neither is ever downloaded here: when a file is missing the metric
is `Unavailable` with the reason, and reports say so instead of printing a number.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


@dataclass(frozen=True)
class Unavailable:
    metric: str
    reason: str

    def record(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}


def cached_checkpoint(url: str) -> Path:
    """Where torch.hub keeps a download of `url`: $TORCH_HOME/hub/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class LpipsScorer:
    """LPIPS per image (N,), over the whole image or averaged inside a region of its spatial map
    (paper 001's local LPIPS: the perceptual distance inside the occluded region)."""

    def __init__(self, network: nn.Module, net: str) -> None:
        self.network = network
        self.net = net

    @torch.no_grad()
    def __call__(self, output: torch.Tensor, clean: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        device = next(self.network.parameters()).device
        output, clean = output.float().clamp(0, 1).to(device), clean.float().clamp(0, 1).to(device)
        self.network.spatial = region is not None
        distance = self.network(output, clean, normalize=True)          # (N, 1, 1, 1) or (N, 1, H, W)
        if region is None:
            return distance.flatten(1).mean(dim=1).cpu()
        weight = region.to(device).float()
        return ((distance * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1)).cpu()


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> LpipsScorer | Unavailable:
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    import torchvision.models
    from torchmetrics.functional.image import lpips as lpips_module

    weights = getattr(torchvision.models, LPIPS_BACKBONES[net]).DEFAULT
    backbone = cached_checkpoint(weights.url)
    if not backbone.is_file():
        return Unavailable("lpips", f"ImageNet {net} weights not in the local torch cache: {backbone} is missing")
    linear_layers = Path(lpips_module.__file__).parent / "lpips_models" / f"{net}.pth"
    if not linear_layers.is_file():
        return Unavailable("lpips", f"torchmetrics' LPIPS layers are missing: {linear_layers}")
    network = lpips_module._NoTrainLpips(net=net, spatial=True)
    return LpipsScorer(network.to(device), net)


class FidScorer:
    """FID between two sets of images (N, 3, H, W) in [0, 1], one Inception network for every pair of sets."""

    def __init__(self, weights: Path, device: torch.device | str = "cpu", batch_size: int = 32) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.fid = FrechetInceptionDistance(feature=2048, normalize=True,
                                            feature_extractor_weights_path=str(weights)).to(device)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor, real: torch.Tensor) -> float | None:
        """None for fewer than two images a side, where the covariance is undefined."""
        if len(generated) < 2 or len(real) < 2:
            return None
        self.fid.reset()
        for images, is_real in ((real, True), (generated, False)):
            for part in images.split(self.batch_size):
                self.fid.update(part.float().clamp(0, 1).to(self.device), real=is_real)
        return float(self.fid.compute())


def load_fid(device: torch.device | str = "cpu") -> FidScorer | Unavailable:
    """torchmetrics' FID when torch-fidelity is installed and its Inception V3 weights are cached."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return Unavailable("fid", "torch-fidelity is not installed (torchmetrics' FID needs its Inception V3)")
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    weights = cached_checkpoint(URL_INCEPTION_V3)
    if not weights.is_file():
        return Unavailable("fid", f"Inception V3 weights not in the local torch cache: {weights} is missing")
    return FidScorer(weights, device)
