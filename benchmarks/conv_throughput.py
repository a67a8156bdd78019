"""How fast this machine runs today: a 3x3 convolution (batch 32, 64 -> 64 channels, 64x64) in fp32,
fp32 channels-last and bf16 channels-last, in GFLOP/s: a yardstick for comparing stage times measured
on different days of a VM whose speed varies (BENCHMARKS.md).

    .venv/bin/python benchmarks/conv_throughput.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def gflops(images: torch.Tensor, weights: torch.Tensor, repeats: int = 10) -> float:
    for _ in range(3):
        F.conv2d(images, weights, padding=1)
    start = time.perf_counter()
    for _ in range(repeats):
        F.conv2d(images, weights, padding=1)
    n, c, h, w = images.shape
    return 2 * n * h * w * c * weights.shape[0] * 9 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    torch.manual_seed(0)
    images, weights = torch.randn(32, 64, 64, 64), torch.randn(64, 64, 3, 3)
    last = torch.channels_last
    print(f"fp32 {gflops(images, weights):.0f} GFLOP/s")
    print(f"fp32 channels-last {gflops(images.contiguous(memory_format=last), weights.contiguous(memory_format=last)):.0f} GFLOP/s")
    half = images.bfloat16().contiguous(memory_format=last), weights.bfloat16().contiguous(memory_format=last)
    print(f"bf16 channels-last {gflops(*half):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
