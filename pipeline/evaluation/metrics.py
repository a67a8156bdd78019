"""Image and mask metrics as pure tensor functions, one value per image: (N, C, H, W) -> (N,).

Images are in [0, 1]; masks are (N, 1, H, W) in {0, 1}. A `region` mask restricts a metric to the
pixels where it is 1 (e.g. inside the occluder), as in paper 001's local metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _region_mean(values: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-pixel values (N, C, H, W) over each image's region."""
    if region is None:
        return values.flatten(1).mean(dim=1)
    weight = region.expand_as(values)
    return (values * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1.0)


def l1_error(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    return _region_mean((prediction - target).abs(), region)


def psnr(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1; the MSE floor 1e-10 caps it at 100 dB."""
    mse = _region_mean((prediction - target) ** 2, region)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    kernel_1d = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    return (kernel_1d[:, None] * kernel_1d[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(prediction: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), channel mean."""
    channels = prediction.shape[1]
    window = _gaussian_window(window_size, sigma, channels, prediction.dtype).to(prediction.device)
    pad = window_size // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window, groups=channels)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_p, mu_t = blur(prediction), blur(target)
    var_p = blur(prediction * prediction) - mu_p ** 2
    var_t = blur(target * target) - mu_t ** 2
    covariance = blur(prediction * target) - mu_p * mu_t
    numerator = (2 * mu_p * mu_t + c1) * (2 * covariance + c2)
    denominator = (mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2)
    return (numerator / denominator).mean(dim=1, keepdim=True)


def ssim(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    return _region_mean(ssim_map(prediction, target), region)


def iou(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary masks; two empty masks agree perfectly (1)."""
    predicted, true = predicted_mask.bool().flatten(1), true_mask.bool().flatten(1)
    intersection = (predicted & true).sum(dim=1).float()
    union = (predicted | true).sum(dim=1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def dice(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    predicted, true = predicted_mask.bool().flatten(1), true_mask.bool().flatten(1)
    intersection = (predicted & true).sum(dim=1).float()
    total = (predicted.sum(dim=1) + true.sum(dim=1)).float()
    return torch.where(total > 0, 2 * intersection / total.clamp_min(1), torch.ones_like(total))


def pixel_accuracy(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    return (predicted_mask.bool() == true_mask.bool()).flatten(1).float().mean(dim=1)


def inpainting_metrics(output: torch.Tensor, clean: torch.Tensor, occluder_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1, PSNR and SSIM over the whole image and inside the occluder, one value per image."""
    return {
        "l1": l1_error(output, clean), "psnr": psnr(output, clean), "ssim": ssim(output, clean),
        "l1_masked": l1_error(output, clean, occluder_mask),
        "psnr_masked": psnr(output, clean, occluder_mask),
        "ssim_masked": ssim(output, clean, occluder_mask),
    }


def segmentation_metrics(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"iou": iou(predicted_mask, true_mask), "dice": dice(predicted_mask, true_mask),
            "pixel_accuracy": pixel_accuracy(predicted_mask, true_mask)}


def class_confusion(predicted_labels: torch.Tensor, true_labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(N, H, W) integer label maps -> (classes, 2): per class, pixels in the intersection and in the union."""
    predicted, true = predicted_labels.long().flatten(), true_labels.long().flatten()
    rows = []
    for label in range(classes):
        p, t = predicted == label, true == label
        rows.append(torch.stack([(p & t).sum(), (p | t).sum()]))
    return torch.stack(rows).double()


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """(classes, 2) intersection and union counts pooled over a dataset -> IoU per class (classes,)."""
    return confusion[:, 0] / confusion[:, 1].clamp_min(1)
