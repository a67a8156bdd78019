"""OpenCV's Telea inpainting (fast marching), the classical baseline given the same masks."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.data.dataset import image_to_tensor, tensor_to_image


def telea_inpaint(occluded_image: torch.Tensor, occluder_mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """(N, 3, H, W) images and (N, 1, H, W) masks -> Telea-inpainted images (N, 3, H, W)."""
    outputs = []
    for image, mask in zip(occluded_image, occluder_mask):
        mask_u8 = (mask[0].numpy() > 0.5).astype(np.uint8) * 255
        outputs.append(image_to_tensor(cv2.inpaint(tensor_to_image(image), mask_u8, radius, cv2.INPAINT_TELEA)))
    return torch.stack(outputs)
