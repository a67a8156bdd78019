"""Training throughput and inference latency/throughput of every paper architecture.

    .venv/bin/python benchmarks/models.py [--sizes 128 256] [--device cpu|cuda] [--out benchmarks/results/models-cpu.json]
        [--models isnet] [--infer-batches 1] [--progressive]

--progressive also times paper 004's progressive reconstruction (Algorithm 1, kernel 15) for the
inpainters, at batch 1 on a centred square hole covering 40 % of the image.

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
from pipeline.deocclusion import ProgressiveReconstruction, progressive_inpaint
from pipeline.models.registry import count_parameters, create_model

ARCHITECTURES = {  # name -> (task, paper-size arguments)
    "soclnet": ("segmenter", {}),
    "sa-unet": ("segmenter", {}),
    "unet-small": ("segmenter", {}),
    "ifacenet": ("inpainter", {}),
    "unet-inpainter": ("inpainter", {}),
    "patchgan": ("discriminator", {}),
    "isnet": ("inpainter", {}),
    "isnet-patchgan": ("discriminator", {}),
    "mmrm-unet": ("inpainter", {}),        # paper 002's size: width 64, depth 6 (the paper-mmrm profile)
    "sn-patchgan": ("discriminator", {}),
}
PROGRESSIVE_HOLE = 0.4   # a large hole, where the paper says the algorithm helps


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


def centred_hole(size: int, ratio: float, device: str) -> torch.Tensor:
    """(1, 1, size, size): a centred square hiding `ratio` of the image."""
    side = round(size * ratio ** 0.5)
    start = (size - side) // 2
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., start:start + side, start:start + side] = 1
    return mask


def bench(name: str, size: int, device: str, train_batch: int, repeats: int, infer_batches: tuple[int, ...] = (1, 32),
          warmup: int = 2, progressive: bool = False, arch_kwargs: dict | None = None,
          fp32: bool = False) -> dict[str, float]:
    task, kwargs = ARCHITECTURES[name]
    kwargs = {**kwargs, **(arch_kwargs or {})}
    net = create_model(name, **kwargs).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" and not fp32 else nullcontext()
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
    step = timed(train_step, device, repeats, warmup)
    net.eval()
    results = {"parameters": count_parameters(net), "train_images_per_s": train_batch / step}
    for n in infer_batches:
        image, mask = batch(n)

        def infer() -> None:
            with torch.no_grad(), autocast:
                run_model(net, task, image, mask)

        seconds = timed(infer, device, repeats if n == 1 else max(2, repeats // 2), warmup)
        results[f"latency_ms_batch{n}"] = seconds * 1000
        results[f"images_per_s_batch{n}"] = n / seconds
    if progressive and task == "inpainter":
        image, hole = batch(1)[0], centred_hole(size, PROGRESSIVE_HOLE, device)
        settings = ProgressiveReconstruction()   # the paper's kernel 15, holes >= 20 %, at most 10 predictions
        results["progressive_steps"] = int(progressive_inpaint(net, image, hole, settings)[1][0])
        def infer_one_shot() -> None:
            with torch.no_grad(), autocast:
                net(image, hole)

        def infer_progressive() -> None:
            with autocast:
                progressive_inpaint(net, image, hole, settings)

        one_shot = timed(infer_one_shot, device, repeats, warmup)
        slow = timed(infer_progressive, device, repeats, warmup)
        results["latency_ms_batch1_hole40"] = one_shot * 1000
        results["latency_ms_batch1_hole40_progressive"] = slow * 1000
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
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--infer-batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--progressive", action="store_true", help="also time progressive reconstruction (inpainters)")
    parser.add_argument("--arch-kwargs", type=json.loads, default=None,
                        help='JSON over the paper-size arguments, e.g. \'{"width": 8, "blocks": 1}\' (a profile\'s knobs)')
    parser.add_argument("--fp32", action="store_true", help="on CUDA too: no bf16 autocast (as the papers' GPUs ran)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        for size in args.sizes:
            row = {"model": name, "size": size, "device": args.device, **bench(name, size, args.device, args.train_batch, args.repeats,
                                                                              tuple(args.infer_batches), args.warmup,
                                                                              args.progressive, args.arch_kwargs, args.fp32),
                   **({"arch_kwargs": args.arch_kwargs} if args.arch_kwargs else {})}
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
               "precision": "fp32" if args.device != "cuda" or args.fp32 else "bf16 autocast"}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
