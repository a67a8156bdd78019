"""OpenCV's classical inpainting, the baselines given the same masks: Telea (fast marching) and
Navier-Stokes (Bertalmio et al. 2001)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.data.dataset import image_to_tensor, tensor_to_image


def _opencv_inpaint(occluded_image: torch.Tensor, occluder_mask: torch.Tensor, radius: int, flags: int) -> torch.Tensor:
    outputs = []
    for image, mask in zip(occluded_image, occluder_mask):
        mask_u8 = (mask[0].cpu().numpy() > 0.5).astype(np.uint8) * 255
        outputs.append(image_to_tensor(cv2.inpaint(tensor_to_image(image.cpu()), mask_u8, radius, flags)))
    return torch.stack(outputs)


def telea_inpaint(occluded_image: torch.Tensor, occluder_mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """(N, 3, H, W) images and (N, 1, H, W) masks -> Telea-inpainted images (N, 3, H, W)."""
    return _opencv_inpaint(occluded_image, occluder_mask, radius, cv2.INPAINT_TELEA)


def navier_stokes_inpaint(occluded_image: torch.Tensor, occluder_mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """(N, 3, H, W) images and (N, 1, H, W) masks -> Navier-Stokes-inpainted images (N, 3, H, W)."""
    return _opencv_inpaint(occluded_image, occluder_mask, radius, cv2.INPAINT_NS)
