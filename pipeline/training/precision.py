"""`trainer.precision: auto`: bf16 autocast only where it trains the network faster than fp32.

On a CPU without AVX-512 BF16 or AMX, PyTorch emulates bf16 convolutions: measured on a 2-core AMD
EPYC (AVX2 only), a 64-channel 3x3 convolution ran at 12 GFLOP/s under bf16 autocast against 122 in
fp32, ten times slower. With those flags it depends on the CPU: bf16 made the quick profile's steps
1.3-1.8x faster on a 2-core EPYC with AVX-512 BF16 and on a Xeon with AMX, but slower on a 2-core
Xeon with AVX-512 BF16 and no AMX (SA-UNet 333 against 289 ms a step, MMRM U-Net 446 against 338;
BENCHMARKS.md). So where the flags allow bf16, `auto` times the network's own step in both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MEMORY_VARIABLE = "DEOCCLUDE_PRECISION_CACHE"   # where a machine remembers its choices; default below
BF16_MIN_SPEEDUP = 1.1      # bf16 must beat fp32 by this factor: a tie keeps fp32's accuracy


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where there is no such file)."""
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_CPU_FLAGS)


def step_seconds(step: Callable[[], object], bf16: bool, repeats: int = 3) -> float:
    """The fastest of `repeats` calls of `step` after one warm-up, on the CPU, under bf16 autocast or not."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        step()
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
    return best


def memory_path(env: dict[str, str] | None = None) -> Path | None:
    """The JSON file in which this machine remembers what `auto` chose: $DEOCCLUDE_PRECISION_CACHE,
    else $XDG_CACHE_HOME/deocclude/precision.json, else ~/.cache/deocclude/precision.json; None
    where there is no home directory to hold it."""
    env = os.environ if env is None else env
    if env.get(MEMORY_VARIABLE):
        return Path(env[MEMORY_VARIABLE])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "deocclude" / "precision.json"
    try:
        return Path.home() / ".cache" / "deocclude" / "precision.json"
    except RuntimeError:  # no HOME and no passwd entry (some containers)
        return None


def machine_key(network: str) -> str:
    """`network` (what is timed: the stage, the network's layers, batch and resolution) on this CPU,
    with this torch and thread count: the same key, the same choice."""
    cpu = next((line.partition(":")[2].strip() for line in _cpuinfo_lines() if line.startswith("model name")), platform.processor())
    described = json.dumps([network, cpu, sorted(cpu_flags() & set(BF16_CPU_FLAGS)), torch.__version__,
                            torch.get_num_threads()])
    return hashlib.sha256(described.encode()).hexdigest()[:32]


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _remembered(path: Path) -> dict[str, str]:
    try:
        if not path.is_file():
            return {}
        choices = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable (%s); timing again and rewriting it", path, error)
        return {}
    return choices if isinstance(choices, dict) else {}


def _remember(path: Path, key: str, choice: str) -> None:
    """Best effort: a machine that cannot keep the choice still trains, and times again next run."""
    choices = {**_remembered(path), key: choice}
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f"{path.name}.", suffix=".partial",
                                         delete=False) as file:
            partial = Path(file.name)
            file.write(json.dumps(choices, indent=1, sort_keys=True))
        os.replace(partial, path)
    except OSError as error:
        logger.warning("precision auto: cannot remember the choice in %s (%s); it will be timed again", path, error)
        if partial is not None:
            partial.unlink(missing_ok=True)


def resolve_precision(precision: str, accelerator: str = "auto", step: Callable[[], object] | None = None,
                      network: str | None = None, memory: Path | None = None) -> str:
    """The Lightning precision to train in: `precision` itself unless it is "auto", which becomes
    "bf16-mixed" on a CUDA GPU with bf16; on a CPU "32" without AVX-512 BF16 / AMX, else "bf16-mixed"
    when `step` (one forward and backward pass of the network) runs at least BF16_MIN_SPEEDUP times
    faster under bf16 autocast than in fp32, or when there is no `step` to time.

    Timings near the threshold vary from run to run, and the precision decides the weights: with
    `network` (a description of what `step` trains) the first choice is kept in `memory`
    (`memory_path()` by default) and reused on this machine, so the same params give the same model."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
    if not cpu_has_fast_bf16():
        return "32"
    if step is None:
        return "bf16-mixed"
    key = machine_key(network) if network is not None else None
    path = memory or memory_path()
    if path is None:
        key = None
    if key is not None and (remembered := _remembered(path).get(key)) in ("32", "bf16-mixed"):
        logger.info("precision auto: %s, as first timed on this machine (%s; delete it to time again)", remembered, path)
        return remembered
    fp32, bf16 = step_seconds(step, bf16=False), step_seconds(step, bf16=True)
    chosen = "bf16-mixed" if fp32 >= BF16_MIN_SPEEDUP * bf16 else "32"
    logger.info("precision auto: a step of the network takes %.0f ms in fp32 and %.0f ms under bf16 autocast: %s",
                fp32 * 1e3, bf16 * 1e3, chosen)
    if key is not None:
        _remember(path, key, chosen)
    return chosen
