"""Does a segmenter trained on a generated dataset find the objects pasted on real photographs?

Trains a segmenter on the train split of a dataset folder as `generate` writes it (manifest.csv with
image_path, mask_path and split), outside the pipeline: a plain loop (Adam, one-cycle, batch 32,
BCE + Dice, flips, fp32, channels_last), and after every epoch scores the occluder IoU, pooled over
all pixels, on the dataset's test split and on the photograph set (`pipeline.data.photographs`).
Two generator versions compare by pointing it at the datasets they wrote:

    .venv/bin/python benchmarks/segmenter_carryover.py data/dataset --epochs 24 --grid /tmp/photos.png

--grid writes the photograph set as rows of (image, true mask, predicted probability).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pipeline  # noqa: F401  (torchvision shim)
from architecture_probe import _iou as pooled_iou   # benchmarks/ is on sys.path when a script there runs
from pipeline.data.photographs import build_photograph_set
from pipeline.losses.segmentation import bce_dice
from pipeline.models.registry import create_model


def load_split(root: Path, rows: list[dict[str, str]], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = [row for row in rows if row["split"] == split]
    images = np.stack([np.asarray(Image.open(root / row["image_path"]).convert("RGB")) for row in chosen])
    masks = np.stack([np.asarray(Image.open(root / row["mask_path"]).convert("L")) for row in chosen])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(masks > 127)[:, None].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--arch", default="sa-unet")
    parser.add_argument("--kwargs", default='{"width": 8}')
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--grid", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = list(csv.DictReader((args.dataset / "manifest.csv").open()))
    train_images, train_masks = load_split(args.dataset, rows, "train")
    test_images, test_masks = load_split(args.dataset, rows, "test")
    photographs = build_photograph_set(train_images.shape[-1])
    photo_images = torch.from_numpy(np.stack([s.occluded_image for s in photographs])).permute(0, 3, 1, 2).float() / 255
    photo_masks = torch.from_numpy(np.stack([s.occluder_mask for s in photographs]) > 127)[:, None].float()
    net = create_model(args.arch, "segmenter", **json.loads(args.kwargs)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(train_images) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for start in range(0, len(train_images), args.batch_size):
            index = order[start:start + args.batch_size]
            images, masks = train_images[index], train_masks[index]
            flip = (torch.rand(len(index), generator=generator) < 0.5)[:, None, None, None]
            images, masks = torch.where(flip, images.flip(-1), images), torch.where(flip, masks.flip(-1), masks)
            terms = bce_dice(net(images), masks, masks[:, 0].long() * 2)
            optimizer.zero_grad()
            (terms["bce"] + terms["dice"]).backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: {time.perf_counter() - started:.0f} s, test IoU {pooled_iou(net, test_images, test_masks, bf16=False):.3f}, "
              f"photograph IoU {pooled_iou(net, photo_images, photo_masks, bf16=False):.3f}", flush=True)
    if args.grid:
        net.eval()
        with torch.no_grad():
            probability = torch.sigmoid(net(photo_images)[:, -1:])
        tiles = [np.concatenate([(photo_images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                                 *(np.repeat((m[i, 0].numpy() * 255).astype(np.uint8)[..., None], 3, 2)
                                   for m in (photo_masks, probability))], 1) for i in range(len(photo_images))]
        rows_of_four = [np.concatenate(tiles[r:r + 4], 1) for r in range(0, len(tiles) - len(tiles) % 4, 4)]
        Image.fromarray(np.concatenate(rows_of_four, 0)).save(args.grid)


if __name__ == "__main__":
    main()
