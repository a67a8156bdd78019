"""End-to-end de-occlusion: occluded image -> predicted occluder mask -> inpainted face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import image_to_tensor, tensor_to_image
from pipeline.models.unet import compose_known_pixels


@torch.no_grad()
def predict_masks(segmenter: nn.Module, occluded_image: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, 3, H, W) -> binary occluder masks (N, 1, H, W)."""
    return (torch.sigmoid(segmenter(occluded_image)) > threshold).float()


@torch.no_grad()
def inpaint(inpainter: nn.Module, occluded_image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
    return compose_known_pixels(inpainter(occluded_image, occluder_mask), occluded_image, occluder_mask)


@dataclass
class Deoccluder:
    """Runs both networks at their training resolution on an image of any size."""

    segmenter: nn.Module
    inpainter: nn.Module
    resolution: int
    threshold: float = 0.5

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> (mask (H, W) uint8 0/255, de-occluded image (H, W, 3) uint8)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        height, width = image.shape[:2]
        original = image_to_tensor(image)[None]                                    # (1, 3, H, W)
        size = (self.resolution, self.resolution)
        resized = F.interpolate(original, size=size, mode="bilinear", antialias=True, align_corners=False)
        mask = predict_masks(self.segmenter, resized, self.threshold)             # (1, 1, r, r)
        inpainted = inpaint(self.inpainter, resized, mask)                        # (1, 3, r, r)
        mask_full = (F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False) > 0.5).float()
        inpainted_full = F.interpolate(inpainted, size=(height, width), mode="bilinear", align_corners=False)
        # Known pixels come from the input at full resolution, not from the resized round trip.
        output = compose_known_pixels(inpainted_full, original, mask_full)
        return (mask_full[0, 0].numpy() * 255).astype(np.uint8), tensor_to_image(output[0])
