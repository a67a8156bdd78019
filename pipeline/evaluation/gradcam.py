"""Grad-CAM (Selvaraju et al. 2017) of a segmenter, one map per class, as paper 000 shows for SOCLNET.

The features are the input of the segmenter's last convolution (its classifier); a class's score is
the sum of its logits over the pixels predicted as that class (all pixels when none is), so each map
shows which features drove that class's region.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def classifier_layer(segmenter: nn.Module) -> nn.Conv2d:
    """The segmenter's last convolution, which maps its final features to class logits."""
    convolutions = [module for module in segmenter.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError(f"{type(segmenter).__name__} has no Conv2d layer for Grad-CAM")
    return convolutions[-1]


def _class_regions(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) logits -> (N, C, h, w) float: where each class is the prediction."""
    if logits.shape[1] == 1:
        return (logits > 0).float()
    return F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).float()


def grad_cam(segmenter: nn.Module, images: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """(N, 3, H, W) images -> (N, C, H, W) Grad-CAM maps in [0, 1], one per output class."""
    features: list[torch.Tensor] = []
    hook = classifier_layer(segmenter).register_forward_pre_hook(lambda _, inputs: features.append(inputs[0]))
    was_training = segmenter.training
    segmenter.eval()
    size = tuple(images.shape[-2:])
    images = images.to(next(segmenter.parameters()).device)
    try:
        with torch.enable_grad():
            model_input = images if not resolution else F.interpolate(images, size=(resolution, resolution),
                                                                      mode="bilinear", align_corners=False)
            logits = segmenter(model_input)                                             # (N, C, h, w)
            regions = _class_regions(logits.detach())
            regions = torch.where(regions.flatten(2).sum(dim=2, keepdim=True).unsqueeze(-1) > 0, regions,
                                  torch.ones_like(regions))
            maps = []
            for label in range(logits.shape[1]):
                score = (logits[:, label] * regions[:, label]).sum()
                (gradient,) = torch.autograd.grad(score, features[-1], retain_graph=True)   # (N, K, h', w')
                weights = gradient.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * features[-1]).sum(dim=1, keepdim=True)).detach()
                maps.append(F.interpolate(cam, size=size, mode="bilinear", align_corners=False))
    finally:
        hook.remove()
        segmenter.train(was_training)
    cams = torch.cat(maps, dim=1)
    peak = cams.flatten(2).amax(dim=2)[..., None, None]
    return (cams / peak.clamp_min(1e-12)).clamp(0, 1).cpu()


def overlay(image: torch.Tensor, cam: torch.Tensor, scale: int = 4) -> np.ndarray:
    """(3, H, W) image in [0, 1] and (H, W) map in [0, 1] -> (H*scale, W*scale, 3) uint8, the map as a
    JET heat map blended over the image."""
    rgb = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    heat = cv2.applyColorMap((cam.cpu().numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    blended = (0.55 * rgb + 0.45 * heat).round().astype(np.uint8)
    return cv2.resize(blended, (blended.shape[1] * scale, blended.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
