"""End-to-end de-occlusion: occluded image -> predicted occluder mask -> inpainted face.

Each network runs at its own training resolution; images of any size are resized for it and the
result resized back, the known pixels always taken from the input itself. The networks run on
whatever device they are on, `batch_size` images at a time; inputs are moved there and results come
back on the input's device (CPU in evaluation and inference, the GPU inside fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import image_to_tensor, tensor_to_image
from pipeline.losses.segmentation import occluder_logits
from pipeline.models.checkpoint import NetworkSettings
from pipeline.models.unet import compose_known_pixels


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = any(current > target for current, target in zip(images.shape[-2:], size))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def opening(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Erosion then dilation with a kernel x kernel square, kernel odd (paper 003's 7x7 clean-up)."""
    if kernel % 2 == 0:
        raise ValueError(f"opening kernel must be odd, got {kernel}")
    pad = kernel // 2
    eroded = -F.max_pool2d(-mask, kernel, stride=1, padding=pad)
    return F.max_pool2d(eroded, kernel, stride=1, padding=pad)


def network_device(network: nn.Module) -> torch.device:
    """The device of the network's first parameter or buffer (CPU for one that has neither)."""
    tensor = next(network.parameters(), None)
    if tensor is None:
        tensor = next(network.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _batches(*tensors: torch.Tensor, batch_size: int | None) -> list[tuple[torch.Tensor, ...]]:
    size = batch_size or len(tensors[0])
    return list(zip(*(tensor.split(size) for tensor in tensors)))


def occluder_probability(segmenter: nn.Module, images: torch.Tensor, test_time_flip: bool = False,
                         logits: torch.Tensor | None = None, mirrored_logits: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, H, W) -> the occluder's probability (N, 1, H, W) in fp32; `test_time_flip`: averaged with
    the mirror image's, mirrored back. `logits` / `mirrored_logits`: the segmenter's output for `images` /
    for their mirror images, mirrored back, when the caller has it."""
    if logits is None:
        logits = segmenter(images)
    probability = torch.sigmoid(occluder_logits(logits).float())
    if test_time_flip:
        if mirrored_logits is None:
            mirrored_logits = segmenter(images.flip(-1)).flip(-1)
        probability = (probability + torch.sigmoid(occluder_logits(mirrored_logits).float())) / 2
    return probability


@torch.no_grad()
def predict_masks(segmenter: nn.Module, occluded_image: torch.Tensor, threshold: float,
                  resolution: int | None = None, opening_kernel: int = 0, batch_size: int | None = None,
                  test_time_flip: bool = False) -> torch.Tensor:
    """(N, 3, H, W) -> binary occluder masks (N, 1, H, W), on occluded_image's device.

    The clean-up runs at the segmenter's resolution, where its kernel size was chosen."""
    device = network_device(segmenter)
    size = tuple(occluded_image.shape[-2:])
    masks = []
    for (images,) in _batches(occluded_image, batch_size=batch_size):
        images = images.to(device)
        model_input = resize(images, (resolution, resolution)) if resolution else images
        probability = occluder_probability(segmenter, model_input, test_time_flip)
        masks.append(mask_from_probability(probability, threshold, opening_kernel, size).to(occluded_image.device))
    return torch.cat(masks)


def mask_from_probability(probability: torch.Tensor, threshold: float, opening_kernel: int,
                          size: tuple[int, int]) -> torch.Tensor:
    """The occluder's probability (N, 1, h, w) at the segmenter's resolution -> its binary mask (N, 1, *size):
    thresholded, cleaned there by an opening when opening_kernel > 1, then resized."""
    cut = threshold
    if opening_kernel > 1:
        probability = opening((probability > threshold).float(), opening_kernel)
        cut = 0.5
    return (resize(probability, size) > cut).float()


@dataclass(frozen=True)
class ProgressiveReconstruction:
    """Paper 004's Algorithm 1: predict, keep the prediction, shrink the hole by a dilation of the
    known region, predict again; while the hole still covers `min_hole_ratio` of the image, at most
    `max_steps` predictions."""

    kernel: int = 15
    min_hole_ratio: float = 0.2
    max_steps: int = 10

    def __post_init__(self) -> None:
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise ValueError(f"progressive reconstruction: dilation kernel must be odd and >= 3, got {self.kernel}")
        if self.max_steps < 1:
            raise ValueError(f"progressive reconstruction: max_steps must be >= 1, got {self.max_steps}")


@torch.no_grad()
def progressive_inpaint(inpainter: nn.Module, image: torch.Tensor, occluder_mask: torch.Tensor,
                        settings: ProgressiveReconstruction) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W), (N, 1, H, W) -> (composited image, predictions made per image (N,)). Known pixels
    are never changed; each step fixes the outer ring of the remaining hole to its prediction."""
    current, hole = image.clone(), occluder_mask.clone()
    steps = torch.zeros(len(image), dtype=torch.long, device=image.device)
    active = torch.ones(len(image), dtype=torch.bool, device=image.device)
    pad = settings.kernel // 2
    while active.any():
        prediction = inpainter(current[active], hole[active]).float()
        current[active] = compose_known_pixels(prediction, current[active], hole[active])
        steps[active] += 1
        # Dilating the known region is eroding the hole.
        hole = -F.max_pool2d(-hole, settings.kernel, stride=1, padding=pad)
        ratio = hole.flatten(1).mean(dim=1)
        active &= (ratio >= settings.min_hole_ratio) & (steps < settings.max_steps)
    return current, steps


@torch.no_grad()
def progressive_steps(occluder_mask: torch.Tensor, settings: ProgressiveReconstruction) -> torch.Tensor:
    """(N, 1, H, W) -> the predictions `progressive_inpaint` makes per image (N,): the mask alone decides."""
    hole, pad = occluder_mask.float(), settings.kernel // 2
    steps = torch.zeros(len(hole), dtype=torch.long, device=hole.device)
    active = torch.ones(len(hole), dtype=torch.bool, device=hole.device)
    while active.any():
        steps[active] += 1
        hole = -F.max_pool2d(-hole, settings.kernel, stride=1, padding=pad)
        active &= (hole.flatten(1).mean(dim=1) >= settings.min_hole_ratio) & (steps < settings.max_steps)
    return steps


def mask_at(occluder_mask: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """The mask an inpainter trained at `resolution` sees: any pixel touched by the occluder is hidden."""
    if not resolution or tuple(occluder_mask.shape[-2:]) == (resolution, resolution):
        return occluder_mask
    return (resize(occluder_mask, (resolution, resolution)) > 0).float()


@torch.no_grad()
def inpaint(inpainter: nn.Module, occluded_image: torch.Tensor, occluder_mask: torch.Tensor,
            resolution: int | None = None, batch_size: int | None = None,
            progressive: ProgressiveReconstruction | None = None) -> torch.Tensor:
    """The inpainted face at the input's size, known pixels from the input, on occluded_image's device."""
    device = network_device(inpainter)
    size = tuple(occluded_image.shape[-2:])
    outputs = []
    for images, masks in _batches(occluded_image, occluder_mask, batch_size=batch_size):
        images, masks = images.to(device), masks.to(device)
        if resolution and size != (resolution, resolution):
            small_image = resize(images, (resolution, resolution))
            small_mask = mask_at(masks, resolution)
            prediction = resize(_predict(inpainter, small_image, small_mask, progressive), size)
        else:
            prediction = _predict(inpainter, images, masks, progressive)
        outputs.append(keep_black_and_white(compose_known_pixels(prediction, images, masks), images, masks).to(occluded_image.device))
    return torch.cat(outputs)


LUMA = (0.299, 0.587, 0.114)   # ITU-R 601, as PIL's "L"


def keep_black_and_white(output: torch.Tensor, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) composited outputs whose input is black and white (equal channels on every known
    pixel, or on every pixel when the mask hides all) replaced by their luma: the inpainter would
    paint skin colours into a grey photograph."""
    known = 1 - occluder_mask
    known = torch.where(known.flatten(1).amax(dim=1).view(-1, 1, 1, 1) > 0, known, torch.ones_like(known))
    spread = ((image[:, 0] - image[:, 1]).abs() + (image[:, 1] - image[:, 2]).abs()).unsqueeze(1) * known
    grey = spread.flatten(1).amax(dim=1) == 0
    if not grey.any():
        return output
    luma = (output * torch.tensor(LUMA, dtype=output.dtype, device=output.device).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return torch.where(grey.view(-1, 1, 1, 1), luma.expand_as(output), output)


def _predict(inpainter: nn.Module, images: torch.Tensor, masks: torch.Tensor,
             progressive: ProgressiveReconstruction | None) -> torch.Tensor:
    if progressive is None:
        return inpainter(images, masks).float()
    return progressive_inpaint(inpainter, images, masks, progressive)[0]


@dataclass
class Deoccluder:
    """Runs both networks, each at its training resolution, on an image of any size."""

    segmenter: nn.Module
    inpainter: nn.Module
    segmenter_resolution: int
    inpainter_resolution: int
    threshold: float = 0.5
    opening_kernel: int = 0
    progressive: ProgressiveReconstruction | None = None   # paper 004's progressive reconstruction, any inpainter
    test_time_flip: bool = False

    @classmethod
    def from_settings(cls, segmenter: nn.Module, segmenter_settings: NetworkSettings, inpainter: nn.Module,
                      inpainter_settings: NetworkSettings,
                      progressive: ProgressiveReconstruction | None = None) -> "Deoccluder":
        """The deoccluder two checkpoints describe: each network at the resolution it was trained at,
        the masks cut as the segmenter's settings say (threshold, opening, flip averaging)."""
        return cls(segmenter, inpainter, segmenter_settings.resolution, inpainter_settings.resolution,
                   segmenter_settings.threshold, segmenter_settings.opening_kernel, progressive,
                   segmenter_settings.test_time_flip)

    def to(self, device: torch.device | str) -> "Deoccluder":
        """Run both networks on `device`; images still come in and go out as numpy arrays."""
        self.segmenter.to(device)
        self.inpainter.to(device)
        return self

    def masks(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> the binary occluder masks (N, 1, H, W) its segmenter settings give."""
        return predict_masks(self.segmenter, images, self.threshold, self.segmenter_resolution, self.opening_kernel,
                             batch_size, self.test_time_flip)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> (mask (H, W) uint8 0/255, de-occluded image (H, W, 3) uint8)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        original = image_to_tensor(image)[None]                                    # (1, 3, H, W)
        mask = self.masks(original)
        output = inpaint(self.inpainter, original, mask, self.inpainter_resolution, progressive=self.progressive)
        return (mask[0, 0].numpy() * 255).astype(np.uint8), tensor_to_image(output[0])
