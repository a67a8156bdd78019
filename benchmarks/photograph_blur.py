"""What the segmenter marks on the photograph set, and whether sharpness decides it.

Scores a trained segmenter (a stage checkpoint, default `models/segmenter.pt`, with its threshold and
flip averaging) on the photograph set (`pipeline.stages.evaluate.photograph_split`, the data
resolution in --params) as it is and blurred first (Gaussian 0.7, 1.0 and 1.5 px; shrunk to 32 and 24
px and back): mean occluder IoU and the mean probability outside the objects. A segmenter that has
learned that sharp detail on a face marks an occluder scores higher on the blurred set. --grid writes
each image over its true mask and predicted probability (rows of ten). --checkpoint takes any
segmenter stage checkpoint (e.g. one kept from an earlier run).

    .venv/bin/python benchmarks/photograph_blur.py [--checkpoint models/segmenter.pt] [--grid /tmp/set.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import pipeline  # noqa: F401  (torchvision shim)
from pipeline.config import load_config
from pipeline.data.synthetic import gaussian_blur
from pipeline.deocclusion import mask_from_probability, occluder_probability, resize
from pipeline.evaluation.metrics import iou
from pipeline.models.checkpoint import load_checkpoint
from pipeline.stages.evaluate import photograph_split


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by the generator's Gaussian (edges repeated)."""
    pictures = images.permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(np.stack([gaussian_blur(picture, sigma) for picture in pictures])).permute(0, 3, 1, 2)


def shrunk_and_back(images: torch.Tensor, size: int) -> torch.Tensor:
    small = F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/segmenter.pt"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--grid", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    cfg = load_config(args.params)
    split = photograph_split(cfg.data.resolution, cfg.seed)
    segmenter, settings = load_checkpoint(args.checkpoint)
    images, truth = split.occluded_image, split.occluder_mask
    variants = {"as it is": images, "Gaussian 0.7 px": blurred(images, 0.7),
                "Gaussian 1.0 px": blurred(images, 1.0), "Gaussian 1.5 px": blurred(images, 1.5),
                "shrunk to 32 px and back": shrunk_and_back(images, 32),
                "shrunk to 24 px and back": shrunk_and_back(images, 24)}
    for name, variant in variants.items():
        if settings.resolution:   # the segmenter's own resolution, as predict_masks does
            variant = resize(variant, (settings.resolution, settings.resolution))
        probability = occluder_probability(segmenter, variant, test_time_flip=settings.test_time_flip)
        masks = mask_from_probability(probability, settings.threshold, settings.opening_kernel, tuple(images.shape[-2:]))
        probability = resize(probability, tuple(images.shape[-2:]))
        outside = probability[truth < 0.5].mean().item()
        print(f"{name:26s} IoU {iou(masks, truth).mean().item():.3f}  mean probability outside the objects {outside:.3f}")
        if args.grid and name == "as it is":
            def rgb(tensor: torch.Tensor) -> np.ndarray:
                return (tensor.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            columns = [np.concatenate([rgb(images[i]), rgb(truth[i]), rgb(probability[i])]) for i in range(len(images))]
            blank = np.zeros_like(columns[0])
            columns += [blank] * (-len(columns) % 10)
            rows = [np.concatenate(columns[k:k + 10], axis=1) for k in range(0, len(columns), 10)]
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate(rows)).save(args.grid)


if __name__ == "__main__":
    main()
