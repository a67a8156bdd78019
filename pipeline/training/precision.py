"""`trainer.precision: auto`: bf16 autocast only where the hardware runs bf16 faster than fp32.

On a CPU without AVX-512 BF16 or AMX, PyTorch emulates bf16 convolutions: measured on a 2-core AMD
EPYC (AVX2 only), a 64-channel 3x3 convolution ran at 12 GFLOP/s under bf16 autocast against 122 in
fp32, ten times slower; on a CPU with AVX-512 BF16 it ran twice as fast (BENCHMARKS.md).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """The Lightning precision to train in: `precision` itself unless it is "auto", which becomes
    "bf16-mixed" on a CUDA GPU with bf16 or a CPU with AVX-512 BF16 / AMX, else "32"."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32"
