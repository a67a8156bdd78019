"""How far each architecture gets on the synthetic generator in a fixed CPU budget, outside the
pipeline: the same data, a plain training loop (Adam, one-cycle schedule, bf16 autocast, flips),
test-split scores after every epoch beside OpenCV Telea and the occluded input.

    python benchmarks/architecture_probe.py data --count 4000 --resolution 64 --out /tmp/probe.npz
    python benchmarks/architecture_probe.py inpainter /tmp/probe.npz --arch ifacenet --kwargs '{...}'
    python benchmarks/architecture_probe.py inpainter /tmp/probe.npz --arch unet-inpainter --telea-residual
    python benchmarks/architecture_probe.py segmenter /tmp/probe.npz --arch sa-unet --kwargs '{"width": 8}'

`--telea-residual` asks whether a network does better refining Telea's fill than painting from the
white hole: it adds the network's output, scaled by 0.1, to the Telea-filled image.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool

import numpy as np
import torch
from torch import nn

import pipeline  # noqa: F401  (torchvision shim)
from pipeline.data.dataset import image_to_tensor
from pipeline.data.photographs import build_photograph_set
from pipeline.data.synthetic import assign_splits, render_sample, stratified_mask_ratios
from pipeline.evaluation.metrics import inpainting_metrics
from pipeline.evaluation.telea import telea_inpaint
from pipeline.losses.segmentation import bce_dice, occluder_logits
from pipeline.models.registry import count_parameters, create_model
from pipeline.models.unet import compose_known_pixels

OCCLUDERS = {"face_mask": 2, "sunglasses": 1, "hand": 2, "hat": 1, "cup": 1, "strokes": 1, "box": 1}
SEED = 42


def _render(job: tuple[int, int, float, float, float]) -> tuple[np.ndarray, ...]:
    index, size, low, high, target = job
    sample = render_sample(SEED, index, size, OCCLUDERS, (low, high), target)
    return sample.occluded_image, sample.clean_image, sample.occluder_mask, sample.label_map


def make_data(count: int, resolution: int, out: str) -> None:
    splits = assign_splits(count, {"train": 0.7, "val": 0.1, "test": 0.2}, SEED)
    targets = stratified_mask_ratios(splits, 0.01, 0.6, SEED)
    with Pool(2) as pool:
        rows = pool.map(_render, [(i, resolution, *targets[i]) for i in range(count)], chunksize=16)
    np.savez(out, occluded=np.stack([r[0] for r in rows]), clean=np.stack([r[1] for r in rows]),
             mask=np.stack([r[2] for r in rows]), label=np.stack([r[3] for r in rows]), split=np.array(splits))


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255


def _rounded(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: round(float(value.mean()), 3) for name, value in scores.items()}


class TeleaResidual(nn.Module):
    """Telea's fill plus a correction from a (image, mask) network; starts near Telea."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, telea_fill: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (telea_fill + (self.inner(telea_fill, mask) - 0.5) * 0.2).clamp(0, 1)


def _training_setup(net: nn.Module, args: argparse.Namespace, train_size: int):
    """Adam with a one-cycle schedule over the whole run; prints the network's size."""
    print("parameters", count_parameters(net))
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps = args.epochs * (train_size // args.batch_size)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.15)


def _batches(train: np.ndarray, batch_size: int, epoch: int):
    order = np.random.default_rng(epoch).permutation(train)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield torch.from_numpy(order[start:start + batch_size]), bool(np.random.default_rng([epoch, start]).random() < 0.5)


def probe_inpainter(args: argparse.Namespace) -> None:
    data = np.load(args.data)
    occluded, clean = _images(data["occluded"]), _images(data["clean"])
    mask = torch.from_numpy(data["mask"])[:, None].float() / 255
    train, test = np.where(data["split"] == "train")[0], np.where(data["split"] == "test")[0]
    telea = telea_inpaint(occluded, mask, 3)
    print("telea", _rounded(inpainting_metrics(telea[test], clean[test], mask[test])))
    print("input", _rounded(inpainting_metrics(occluded[test], clean[test], mask[test])))
    net = create_model(args.arch, task="inpainter", **json.loads(args.kwargs))
    network_input = occluded
    if args.telea_residual:
        net, network_input = TeleaResidual(net), telea
    optimizer, schedule = _training_setup(net, args, len(train))
    started = time.time()
    for epoch in range(args.epochs):
        for index, flip in _batches(train, args.batch_size, epoch):
            x, y, m = network_input[index], clean[index], mask[index]
            if flip:
                x, y, m = x.flip(-1), y.flip(-1), m.flip(-1)
            with torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
                prediction = net(x, m).float()
            error = (prediction - y).abs()
            loss = error.mean() + args.hole_weight * (error * m).sum() / (3 * m.sum() + 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
            output = torch.cat([net(network_input[test][i:i + 64], mask[test][i:i + 64]).float()
                                for i in range(0, len(test), 64)])
        net.train()
        scores = inpainting_metrics(compose_known_pixels(output, occluded[test], mask[test]), clean[test], mask[test])
        print(epoch, f"{time.time() - started:.0f}s", _rounded(scores), flush=True)


def _iou(net: nn.Module, images: torch.Tensor, masks: torch.Tensor, bf16: bool) -> float:
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        predicted = torch.cat([occluder_logits(net(images[i:i + 64])).float() for i in range(0, len(images), 64)]) > 0
    net.train()
    truth = masks > 0.5
    return round(float((predicted & truth).sum() / (predicted | truth).sum()), 3)


def probe_segmenter(args: argparse.Namespace) -> None:
    data = np.load(args.data)
    occluded = _images(data["occluded"])
    mask = torch.from_numpy(data["mask"])[:, None].float() / 255
    label = torch.from_numpy(data["label"]).long()
    train, test = np.where(data["split"] == "train")[0], np.where(data["split"] == "test")[0]
    photographs = build_photograph_set(occluded.shape[-1], 0)
    photo_images = torch.stack([image_to_tensor(s.occluded_image) for s in photographs])
    photo_masks = torch.stack([torch.from_numpy(s.occluder_mask)[None].float() / 255 for s in photographs])
    net = create_model(args.arch, task="segmenter", **json.loads(args.kwargs))
    optimizer, schedule = _training_setup(net, args, len(train))
    started = time.time()
    for epoch in range(args.epochs):
        for index, flip in _batches(train, args.batch_size, epoch):
            x, m, labels = occluded[index], mask[index], label[index]
            if flip:
                x, m, labels = x.flip(-1), m.flip(-1), labels.flip(-1)
            with torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
                logits = net(x)
            loss = sum(bce_dice(logits.float(), m, labels).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(epoch, f"{time.time() - started:.0f}s", "occluder IoU: test", _iou(net, occluded[test], mask[test], args.bf16),
              "photographs", _iou(net, photo_images, photo_masks, args.bf16), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data")
    data.add_argument("--count", type=int, default=4000)
    data.add_argument("--resolution", type=int, default=64)
    data.add_argument("--out", required=True)
    for name in ("inpainter", "segmenter"):
        probe = commands.add_parser(name)
        probe.add_argument("data")
        probe.add_argument("--arch", required=True)
        probe.add_argument("--kwargs", default="{}")
        probe.add_argument("--epochs", type=int, default=6)
        probe.add_argument("--batch-size", type=int, default=16)
        probe.add_argument("--lr", type=float, default=1e-3)
        probe.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
        if name == "inpainter":
            probe.add_argument("--hole-weight", type=float, default=4.0)
            probe.add_argument("--telea-residual", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.command == "data":
        make_data(args.count, args.resolution, args.out)
    elif args.command == "inpainter":
        probe_inpainter(args)
    else:
        probe_segmenter(args)


if __name__ == "__main__":
    main()
