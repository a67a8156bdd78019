"""Where the trained segmenter fails on the test split, and what mask post-processing does about it.

Reads the workspace's pipeline outputs (`data/dataset`, `models/segmenter.pt`,
`models/inpainter_finetuned.pt`, e.g. after `make run` or `bash benchmarks/quality.sh`) and prints:
per mask-ratio bin the occluder IoU (mean per image and pooled), false positives and misses as a share
of the true occluder's area; IoU per occluder type; then, for the threshold alone, horizontal-flip
test-time averaging, hysteresis thresholds, soft compositing and the mask grown by one pixel, the
occluder IoU, the 1-10 % bin's whole-image L1 and SSIM (where floor 2 fails against the input), and
over the split the whole-image SSIM and the in-mask PSNR.
Also the inpainter's PSNR inside the ground-truth mask against OpenCV Telea's (floor 3).

    .venv/bin/python benchmarks/segmenter_errors.py [--inpainter models/inpainter.pt ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import pipeline  # noqa: F401  (the torchvision shim first)
from pipeline.data.dataset import load_split
from pipeline.deocclusion import inpaint
from pipeline.evaluation.metrics import inpainting_metrics, iou
from pipeline.evaluation.telea import telea_inpaint
from pipeline.losses.segmentation import occluder_logits
from pipeline.models.checkpoint import load_checkpoint

EDGES = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def hysteresis(probability: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Pixels above `low` connected (8-neighbourhood) to a pixel above `high`."""
    weak, mask = (probability > low).float(), (probability > high).float()
    while True:
        grown = F.max_pool2d(mask, 3, 1, 1) * weak
        if torch.equal(grown, mask):
            return mask
        mask = grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    parser.add_argument("--segmenter", type=Path, default=Path("models/segmenter.pt"))
    parser.add_argument("--inpainter", type=Path, nargs="+", default=[Path("models/inpainter_finetuned.pt")],
                        help="the first composes the end-to-end rows; each is scored with ground-truth masks")
    args = parser.parse_args()

    split = load_split(args.dataset, "test")
    part = split.select(0, len(split))
    image, clean, truth, ratio = part.occluded_image, part.clean_image, part.occluder_mask, part.mask_ratio
    segmenter, _ = load_checkpoint(args.segmenter)
    with torch.no_grad():
        def probability(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.sigmoid(occluder_logits(segmenter(chunk)).float()) for chunk in images.split(100)])
        plain = probability(image)
        flipped = probability(image.flip(-1)).flip(-1)

    predicted = (plain > 0.5).float()
    per_image = iou(predicted, truth)
    print("bin        IoU mean  IoU pooled  false pos/true  missed/true")
    for low, high in zip(EDGES, EDGES[1:]):
        inside = (ratio >= low) & (ratio < high)
        p, t = predicted[inside], truth[inside]
        pooled = (p * t).sum() / ((p + t) > 0).float().sum()
        false_positives, missed = (p * (1 - t)).sum() / t.sum(), ((1 - p) * t).sum() / t.sum()
        print(f"{low:.0%}-{high:.0%}  {per_image[inside].mean():9.3f}  {pooled:10.3f}  {false_positives:14.3f}  {missed:11.3f}")
    pooled = (predicted * truth).sum() / ((predicted + truth) > 0).float().sum()
    print(f"all        {per_image.mean():9.4f}  {pooled:10.4f}")
    for kind in sorted(set(part.occluder_type)):
        chosen = torch.tensor([t == kind for t in part.occluder_type])
        print(f"  {kind:12s} n={int(chosen.sum()):3d}  IoU {per_image[chosen].mean():.3f}")

    inpainter, _ = load_checkpoint(args.inpainter[0])
    small = ratio < 0.1

    def scored(name: str, output: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        metrics = inpainting_metrics(output, clean, truth)
        segmentation = f"IoU {iou(mask, truth).mean():.4f}" if mask is not None else " " * 10
        print(f"{name:34s} {segmentation}  1-10 %: L1 {metrics['l1'][small].mean():.4f} "
              f"SSIM {metrics['ssim'][small].mean():.4f}  all: SSIM {metrics['ssim'].mean():.4f} "
              f"in-mask PSNR {metrics['psnr_masked'].mean():.2f}")

    scored("occluded input", image)
    averaged = (plain + flipped) / 2
    for label, prob in (("threshold 0.5", plain), ("flip-averaged, 0.5", averaged)):
        mask = (prob > 0.5).float()
        output = inpaint(inpainter, image, mask, batch_size=100)
        scored(label, output, mask)
        alpha = ((prob - 0.5) / 0.5).clamp(0, 1) * mask
        scored("  soft compositing", alpha * output + (1 - alpha) * image, mask)
    for high in (0.8, 0.9, 0.97):
        mask = hysteresis(plain, 0.5, high)
        scored(f"hysteresis 0.5 / {high}", inpaint(inpainter, image, mask, batch_size=100), mask)
    grown = F.max_pool2d(predicted, 3, stride=1, padding=1)
    scored("grown by one pixel (3x3 dilation)", inpaint(inpainter, image, grown, batch_size=100), grown)
    scored("  Telea on the same grown mask", telea_inpaint(image, grown, 3), grown)

    telea = inpainting_metrics(telea_inpaint(image, truth, 3), clean, truth)["psnr_masked"].mean()
    for path in args.inpainter:
        network, _ = load_checkpoint(path)
        ours = inpainting_metrics(inpaint(network, image, truth, batch_size=100), clean, truth)["psnr_masked"].mean()
        print(f"ground-truth masks, {path}: in-mask PSNR {ours:.2f}, Telea {telea:.2f}, {ours - telea:+.2f} dB")


if __name__ == "__main__":
    main()
