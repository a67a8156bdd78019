"""How far a fill of the hole gets without learning, and what the MMRM U-Net adds on top (floor 3).

Reads the workspace's dataset (`data/dataset`, e.g. after `make run`). First, on the validation split,
the PSNR inside the ground-truth mask of: OpenCV Telea and Navier-Stokes, the harmonic fill the quick
profile's inpainter corrects (`smooth_fill`, at several Jacobi steps a level), the relaxed biharmonic
fill of `hole_fill: biharmonic` (`smooth_fill(..., equation="biharmonic")`), scikit-image's exact
biharmonic solve, and the mean of the harmonic and the exact biharmonic fill; then oracles built from
the clean image (blurred, or each hole its own true mean colour) and each torch fill's time. Then,
with `--fit`, it trains the quick profile's MMRM U-Net (bf16 autocast, Adam one-cycle, the stage's L1 + 4 x hole L1, flips) on the
training split over a chosen base fill, and prints the validation PSNR in the mask and the same on 300
training images after each epoch: equal figures mean the network underfits (more data would not help).

    .venv/bin/python benchmarks/hole_fills.py [--images 120]
    .venv/bin/python benchmarks/hole_fills.py --fit smooth|biharmonic|mean --width 8 --epochs 2 [--plain-blocks]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic

import pipeline  # noqa: F401  (the torchvision shim first)
from pipeline.config import OptimizerConfig
from pipeline.data.dataset import load_split
from pipeline.evaluation.metrics import inpainting_metrics
from pipeline.evaluation.telea import navier_stokes_inpaint, telea_inpaint
from pipeline.evaluation.timing import timed
from pipeline.models.mmrm_unet import MMRMUNet, smooth_fill
from pipeline.models.unet import compose_known_pixels
from pipeline.training.augment import flip_half
from pipeline.training.optim import build_schedule


def biharmonic_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """scikit-image's sparse biharmonic solve, image by image (about 8 ms each at 64 px)."""
    filled = [inpaint_biharmonic(image.permute(1, 2, 0).numpy(), mask[0].numpy() > 0, channel_axis=-1)
              for image, mask in zip(images, masks)]
    return torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2).float().clamp(0, 1)


def base_fill(kind: str, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if kind == "biharmonic":
        return smooth_fill(images, masks, equation="biharmonic")
    harmonic = smooth_fill(images, masks)
    return harmonic if kind == "smooth" else (harmonic + biharmonic_fill(images, masks)) / 2


def psnr_in_mask(filled: torch.Tensor, images: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor) -> float:
    composed = compose_known_pixels(filled, images, masks)
    return inpainting_metrics(composed, clean, masks)["psnr_masked"].mean().item()


def compare_fills(dataset: Path, count: int) -> None:
    from torchvision.transforms.v2.functional import gaussian_blur   # after pipeline's torchvision shim

    val = load_split(dataset, "val").select(0, count)
    images, clean, masks = val.occluded_image, val.clean_image, val.occluder_mask
    harmonic = {steps: smooth_fill(images, masks, steps) for steps in (1, 5, 20, 100)}
    biharmonic = biharmonic_fill(images, masks)
    rows = {"OpenCV Telea": telea_inpaint(images, masks), "OpenCV Navier-Stokes": navier_stokes_inpaint(images, masks),
            **{f"harmonic, {steps} Jacobi steps a level": filled for steps, filled in harmonic.items()},
            **{f"biharmonic, relaxed {steps} damped Jacobi steps a level": smooth_fill(images, masks, steps, "biharmonic")
               for steps in (20, 50, 100)},
            "biharmonic (scikit-image's exact solve)": biharmonic,
            "mean of harmonic (5 steps) and biharmonic": (harmonic[5] + biharmonic) / 2}
    print(f"PSNR inside the ground-truth mask, {len(images)} validation images")
    for name, filled in rows.items():
        print(f"  {name:45s} {psnr_in_mask(filled, images, clean, masks):.3f}")
    print("Oracles, from the clean image itself (how much of the error lies at which scale)")
    for sigma in (1.0, 2.0, 3.0):
        blurred = gaussian_blur(clean, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)
        print(f"  the clean image blurred, Gaussian sigma {sigma:.0f} px         {psnr_in_mask(blurred, images, clean, masks):.3f}")
    hole_mean = (clean * masks).sum(dim=(2, 3), keepdim=True) / masks.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    print(f"  each hole filled with its own true mean colour    {psnr_in_mask(hole_mean.expand_as(clean), images, clean, masks):.3f}")
    print("ms per batch of 16 (median of 20 calls)")
    for equation, steps in (("harmonic", 5), ("biharmonic", 20), ("biharmonic", 50), ("biharmonic", 100)):
        print(f"  {equation}, {steps} steps a level: {fill_time(images[:16], masks[:16], steps, equation):.1f}")


def fill_time(images: torch.Tensor, masks: torch.Tensor, steps: int, equation: str) -> float:
    smooth_fill(images, masks, steps, equation)
    times = [timed(lambda: smooth_fill(images, masks, steps, equation), images.device)[1] for _ in range(20)]
    return float(np.median(times)) * 1e3


def fit(dataset: Path, kind: str, width: int, epochs: int, plain_blocks: bool, seed: int = 0) -> None:
    torch.manual_seed(seed)
    train, val = load_split(dataset, "train"), load_split(dataset, "val")
    train, val = train.select(0, len(train)), val.select(0, len(val))
    train_base = base_fill(kind, train.occluded_image, train.occluder_mask)
    val_base = base_fill(kind, val.occluded_image, val.occluder_mask)
    # The base is passed to encode and decode, so hole_fill only shapes the stem and head: the same for every kind.
    net = MMRMUNet(width=width, depth=4, hole_fill="smooth", use_mmrm=not plain_blocks).to(memory_format=torch.channels_last)
    batch_size, lr = 16, 0.002
    steps_per_epoch = len(train.ids) // batch_size
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = build_schedule(optimizer, OptimizerConfig(name="adam", lr=lr, schedule="onecycle"), epochs * steps_per_epoch)

    def predict(images: torch.Tensor, masks: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net.decode(*net.encode(images, masks, base), base=base).float()

    def score(split, base: torch.Tensor, count: int) -> float:
        net.eval()
        with torch.no_grad():
            output = torch.cat([predict(split.occluded_image[i:j], split.occluder_mask[i:j], base[i:j])
                                for i in range(0, count, 64) for j in [min(i + 64, count)]])
        net.train()
        return psnr_in_mask(output, split.occluded_image[:count], split.clean_image[:count], split.occluder_mask[:count])

    print(f"{kind} fill: validation {psnr_in_mask(val_base, val.occluded_image, val.clean_image, val.occluder_mask):.3f}; "
          f"{'plain blocks' if plain_blocks else 'MMRM'} width {width}, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters")
    started, step = time.time(), 0
    for epoch in range(epochs):
        for batch in torch.randperm(len(train.ids))[:steps_per_epoch * batch_size].split(batch_size):
            flipped = flip_half({"occluded_image": train.occluded_image[batch], "clean_image": train.clean_image[batch],
                                 "occluder_mask": train.occluder_mask[batch], "base": train_base[batch]}, step)
            images, clean, masks, base = (flipped[key] for key in ("occluded_image", "clean_image", "occluder_mask", "base"))
            error = (predict(images, masks, base) - clean).abs()
            loss = error.mean() + 4 * (error * masks).sum() / (3 * masks.sum() + 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
        print(f"  epoch {epoch + 1}: {time.time() - started:.0f} s, PSNR in the mask: validation "
              f"{score(val, val_base, len(val.ids)):.3f}, 300 training images {score(train, train_base, 300):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    parser.add_argument("--images", type=int, default=120, help="validation images for the fills' table")
    parser.add_argument("--fit", choices=("smooth", "biharmonic", "mean"), help="train the MMRM U-Net over this base fill")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--plain-blocks", action="store_true", help="the `without MMRM` ablation's blocks")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.fit:
        fit(args.dataset, args.fit, args.width, args.epochs, args.plain_blocks)
    else:
        compare_fills(args.dataset, args.images)


if __name__ == "__main__":
    main()
