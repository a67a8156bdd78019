"""Latency and throughput of the end-to-end de-occlusion path (segmenter, then inpainter), measured on
whatever machine runs it: figures to read, not to gate on."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch

from pipeline.deocclusion import Deoccluder, inpaint, network_device

T = TypeVar("T")


@dataclass(frozen=True)
class Latency:
    batch_size: int
    repeats: int
    median_ms: float                 # one batch, segmenter and inpainter, input already in memory
    images_per_second: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """run()'s result and its wall time in seconds, the device's queued work included."""
    _synchronize(device)
    start = time.perf_counter()
    result = run()
    _synchronize(device)
    return result, time.perf_counter() - start


@torch.no_grad()
def measure_latency(deoccluder: Deoccluder, images: torch.Tensor, batch_size: int, repeats: int) -> Latency:
    """Median wall time of `repeats` batches of `batch_size` images (N, 3, H, W), after one warm-up."""
    batch = images[torch.arange(batch_size) % len(images)]
    device = network_device(deoccluder.inpainter)

    def once() -> float:
        _synchronize(device)
        start = time.perf_counter()
        mask = deoccluder.masks(batch)
        inpaint(deoccluder.inpainter, batch, mask, deoccluder.inpainter_resolution, progressive=deoccluder.progressive)
        _synchronize(device)
        return time.perf_counter() - start

    once()
    times = sorted(once() for _ in range(repeats))
    median = times[len(times) // 2]
    return Latency(batch_size, repeats, round(median * 1000, 3), round(batch_size / median, 2))


def latency_record(deoccluder: Deoccluder, images: torch.Tensor, batch_sizes: tuple[int, ...],
                   repeats: int) -> dict[str, object]:
    device = network_device(deoccluder.inpainter)
    return {
        "note": "machine-dependent; no gate or check reads these figures",
        "machine": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "image_size": list(images.shape[-2:]),
        **{f"batch_{size}": asdict(measure_latency(deoccluder, images, size, repeats)) for size in batch_sizes},
    }
