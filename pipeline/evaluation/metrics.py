"""Image and mask metrics as pure tensor functions, one value per image: (N, C, H, W) -> (N,).

Images are in [0, 1]; masks are (N, 1, H, W) in {0, 1}. A `region` mask restricts a metric to the
pixels where it is 1 (e.g. inside the occluder), as in paper 001's local metrics. PSNR, SSIM, IoU
and Dice are torchmetrics' own; the region versions average torchmetrics' per-pixel values.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.segmentation import dice_score, mean_iou

PSNR_CAP_DB = 100.0   # identical images (MSE 0) score this instead of infinity, so means stay finite


def _region_mean(values: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-pixel values (N, C, H, W) over each image's region."""
    if region is None:
        return values.flatten(1).mean(dim=1)
    weight = region.expand_as(values)
    return (values * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1.0)


def l1_error(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    return _region_mean((prediction - target).abs(), region)


def psnr(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1, capped at PSNR_CAP_DB; inside `region` when given
    (an empty region scores the cap: nothing there is wrong)."""
    prediction, target = prediction.float(), target.float()
    if region is None:
        values = peak_signal_noise_ratio(prediction, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    else:
        values = torch.stack([
            peak_signal_noise_ratio(p[r.expand_as(p) > 0], t[r.expand_as(t) > 0], data_range=1.0)
            if bool((r > 0).any()) else torch.tensor(float("inf"), device=p.device)
            for p, t, r in zip(prediction, target, region)])
    return values.nan_to_num(PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)


def ssim_map(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (N, 1, H, W), the channel mean of torchmetrics' full SSIM image (Wang et al. 2004:
    11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, reflected borders)."""
    _, full = structural_similarity_index_measure(prediction.float(), target.float(), data_range=1.0,
                                                  reduction="none", return_full_image=True)
    return full.mean(dim=1, keepdim=True)


def ssim(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    return _region_mean(ssim_map(prediction, target), region)


def _binary_labels(mask: torch.Tensor) -> torch.Tensor:
    return (mask[:, 0] > 0.5).long()                                 # (N, 1, H, W) -> (N, H, W) in {0, 1}


def iou(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary masks; two empty masks agree perfectly (1)."""
    values = mean_iou(_binary_labels(predicted_mask), _binary_labels(true_mask), num_classes=2,
                      include_background=False, input_format="index")
    return values.float().nan_to_num(1.0)


def dice(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """Dice (F1) of binary masks; two empty masks agree perfectly (1)."""
    with warnings.catch_warnings():   # torchmetrics warns of a default change even when `average` is given
        warnings.simplefilter("ignore", UserWarning)
        values = dice_score(_binary_labels(predicted_mask), _binary_labels(true_mask), num_classes=2,
                            include_background=False, average="micro", input_format="index")
    return values.float().nan_to_num(1.0)


def pixel_accuracy(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    return (predicted_mask.bool() == true_mask.bool()).flatten(1).float().mean(dim=1)


def mask_ssim(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """SSIM between the predicted and the true binary mask as 1-channel images (paper 003)."""
    return ssim(predicted_mask.float(), true_mask.float())


def inpainting_metrics(output: torch.Tensor, clean: torch.Tensor, occluder_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1, PSNR and SSIM over the whole image and inside the occluder, one value per image."""
    similarity = ssim_map(output, clean)   # once for both SSIMs: the map is most of the metrics' cost
    return {
        "l1": l1_error(output, clean), "psnr": psnr(output, clean), "ssim": _region_mean(similarity, None),
        "l1_masked": l1_error(output, clean, occluder_mask),
        "psnr_masked": psnr(output, clean, occluder_mask),
        "ssim_masked": _region_mean(similarity, occluder_mask),
    }


def segmentation_metrics(predicted_mask: torch.Tensor, true_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"iou": iou(predicted_mask, true_mask), "dice": dice(predicted_mask, true_mask),
            "pixel_accuracy": pixel_accuracy(predicted_mask, true_mask)}


def class_confusion(predicted_labels: torch.Tensor, true_labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(N, H, W) integer label maps -> (classes, classes) pixel counts, rows true, columns predicted;
    summed over batches, it pools the whole set's pixels."""
    return multiclass_confusion_matrix(predicted_labels.long().flatten(), true_labels.long().flatten(),
                                       num_classes=classes).double()


def class_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pooled (classes, classes) confusion -> IoU and Dice per class (classes,) and pixel accuracy ()."""
    hits = confusion.diagonal()
    true_pixels, predicted_pixels = confusion.sum(dim=1), confusion.sum(dim=0)
    return {"iou": hits / (true_pixels + predicted_pixels - hits).clamp_min(1),
            "dice": 2 * hits / (true_pixels + predicted_pixels).clamp_min(1),
            "pixel_accuracy": hits.sum() / confusion.sum().clamp_min(1)}


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """Pooled (classes, classes) confusion -> IoU per class (classes,)."""
    return class_scores(confusion)["iou"]
