"""Training throughput and inference latency/throughput of every paper architecture.

    .venv/bin/python benchmarks/models.py [--sizes 128 256] [--device cpu|cuda] [--out benchmarks/results/models-cpu.json]

CPU runs in fp32 (this CPU's bf16 GEMM is ~600x slower than fp32); on CUDA, bf16 autocast with
channels_last and peak memory. Each figure is the median of timed repetitions after warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import pipeline  # noqa: F401  (torchvision shim)
from pipeline.models.registry import count_parameters, create_model

ARCHITECTURES = {  # name -> (task, paper-size arguments)
    "soclnet": ("segmenter", {}),
    "sa-unet": ("segmenter", {}),
    "unet-small": ("segmenter", {}),
    "ifacenet": ("inpainter", {}),
    "unet-inpainter": ("inpainter", {}),
    "patchgan": ("discriminator", {}),
}


def run_model(net: torch.nn.Module, task: str, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return net(image, mask) if task == "inpainter" else net(image)


def timed(fn, device: str, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, size: int, device: str, train_batch: int, repeats: int) -> dict[str, float]:
    task, kwargs = ARCHITECTURES[name]
    net = create_model(name, **kwargs).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    if device == "cuda":
        net = net.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.rand(n, 3, size, size, device=device)
        mask = (torch.rand(n, 1, size, size, device=device) > 0.7).float()
        if device == "cuda":
            image = image.to(memory_format=torch.channels_last)
        return image, mask

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    train_image, train_mask = batch(train_batch)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = run_model(net, task, train_image, train_mask).float().mean()
        loss.backward()
        optimizer.step()

    net.train()
    step = timed(train_step, device, repeats)
    net.eval()
    results = {"parameters": count_parameters(net), "train_images_per_s": train_batch / step}
    for n in (1, 32):
        image, mask = batch(n)

        def infer() -> None:
            with torch.no_grad(), autocast:
                run_model(net, task, image, mask)

        seconds = timed(infer, device, repeats if n == 1 else max(2, repeats // 2))
        results[f"latency_ms_batch{n}"] = seconds * 1000
        results[f"images_per_s_batch{n}"] = n / seconds
    if device == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        for size in args.sizes:
            row = {"model": name, "size": size, "device": args.device, **bench(name, size, args.device, args.train_batch, args.repeats)}
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
