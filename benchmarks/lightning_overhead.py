"""Time per training step: Lightning's loop against a plain PyTorch loop, same model, data and optimizer.

    .venv/bin/python benchmarks/lightning_overhead.py [--model sa-unet] [--size 128] [--batch 8] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import pipeline  # noqa: F401  (torchvision shim)
import lightning as L
from torch.utils.data import DataLoader

from pipeline.config import OptimizerConfig
from pipeline.losses.reconstruction import weighted_sum
from pipeline.losses.segmentation import bce_dice
from pipeline.models.registry import create_model
from pipeline.training.optim import build_optimizer
from pipeline.training.segmenter import SegmenterModule

WEIGHTS = {"bce": 1.0, "dice": 1.0}


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.steps = trainer.global_step - self.warmup


def dataset(count: int, size: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, size, size, generator=generator)
    masks = (torch.rand(count, 1, size, size, generator=generator) > 0.7).float()
    return [{"occluded_image": images[i], "occluder_mask": masks[i], "label_map": (masks[i, 0] * 2).long()}
            for i in range(count)]


def plain_loop(model: str, data: list, batch: int, warmup: int) -> float:
    torch.manual_seed(0)
    net = create_model(model).train()
    optimizer = build_optimizer(net.parameters(), OptimizerConfig("adam", 1e-4))
    loader = DataLoader(data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    start, steps = 0.0, 0
    for index, item in enumerate(loader):
        if index == warmup:
            start = time.perf_counter()
        loss = weighted_sum(bce_dice(net(item["occluded_image"]), item["occluder_mask"], item["label_map"]), WEIGHTS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += index >= warmup
    return (time.perf_counter() - start) / steps


def lightning_loop(model: str, data: list, batch: int, warmup: int) -> float:
    torch.manual_seed(0)
    module = SegmenterModule(create_model(model), OptimizerConfig("adam", 1e-4), WEIGHTS)
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, DataLoader(data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)))
    return timer.elapsed / timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sa-unet")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = dataset(args.batch * (args.steps + args.warmup), args.size)
    plain, lightning_ = [], []
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits both alike
        plain.append(plain_loop(args.model, data, args.batch, args.warmup))
        lightning_.append(lightning_loop(args.model, data, args.batch, args.warmup))
    result = {"model": args.model, "size": args.size, "batch": args.batch, "steps": args.steps,
              "plain_s_per_step": min(plain), "lightning_s_per_step": min(lightning_),
              "overhead_percent": 100 * (min(lightning_) / min(plain) - 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
