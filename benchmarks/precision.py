"""What `trainer.precision: auto` chooses here, and why: training throughput of the quick profile's
two networks in fp32 and bf16 autocast, each contiguous and channels_last, on this machine's CPU.

    .venv/bin/python benchmarks/precision.py [--params params.yaml] [--steps 4] [--out benchmarks/results/precision.json]

Each figure is images per second over --steps timed optimizer steps (Adam, a pixel loss) after one
warm-up step, at the params' data.resolution and each section's batch size, each variant in a process
of its own (`crashed (exit code N)` where it killed it, `failed: ...` where it raised, `timed out`
after --timeout seconds).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

import pipeline  # noqa: F401  (torchvision shim)
from pipeline.config import load_config
from pipeline.models.face_prior import EigenfacePrior
from pipeline.models.registry import create_model
from pipeline.stages.training import network_step
from pipeline.training.precision import BF16_CPU_FLAGS, cpu_flags, resolve_precision

VARIANTS = {"fp32": (False, False), "fp32 channels_last": (False, True), "bf16 autocast": (True, False),
            "bf16 autocast channels_last": (True, True)}


def build(arch: str, kwargs: dict, task: str, resolution: int) -> torch.nn.Module:
    """The network, its eigenface prior (hole_fill: eigenface) fitted to random images: the fill's cost
    does not depend on what it was fitted to."""
    net = create_model(arch, task=task, **kwargs)
    for module in net.modules():
        if isinstance(module, EigenfacePrior):
            module.fit(torch.rand(64, 3, resolution, resolution))
    return net


def images_per_second(arch: str, kwargs: dict, task: str, resolution: int, batch: int, bf16: bool,
                      channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    net = build(arch, kwargs, task, resolution)
    image = torch.rand(batch, 3, resolution, resolution)
    mask = (torch.rand(batch, 1, resolution, resolution) > 0.7).float()
    if channels_last:
        net, image, mask = (t.to(memory_format=torch.channels_last) for t in (net, image, mask))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16) if bf16 else nullcontext():
            output = net(image) if task == "segmenter" else net(image, mask)
        loss = output.float().abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def _child(connection, args) -> None:
    try:
        connection.send(round(images_per_second(*args), 1))
    except Exception as error:   # noqa: BLE001 - reported in the table, the other variants still run
        connection.send(f"failed: {type(error).__name__}: {error}"[:120])


def measured(*args, timeout: float) -> float | str:
    """images_per_second in a child process of its own: a variant that kills its process (mmrm-unet's
    fp32 channels_last step aborted with `free(): invalid next size` / `double free` on two of these
    CPUs) is reported as `crashed (exit code)`, one that raises as `failed: ...`, one still running
    after `timeout` seconds as `timed out`; the benchmark goes on with the next."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, args))
    child.start()
    sender.close()   # the child holds the only write end now: its death reads as EOF
    try:
        if receiver.poll(timeout):
            return receiver.recv()
        return "timed out"
    except EOFError:
        child.join(timeout=30)
        return f"crashed (exit code {child.exitcode})"
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a variant may run (bf16 emulated on an AVX2-only CPU runs ~10x slower)")
    args = parser.parse_args()
    cfg = load_config(args.params)
    flags = sorted(cpu_flags() & {*BF16_CPU_FLAGS, "avx2", "avx512f", "avx512_vnni"})
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, flags {flags}",
              "torch": torch.__version__, "profile": cfg.profile, "rows": []}
    for task, section in (("segmenter", cfg.segmenter), ("inpainter", cfg.inpainter)):
        resolution = section.resolution or cfg.data.resolution
        row = {"network": f"{section.arch} {section.arch_kwargs}", "resolution": resolution, "batch": section.batch_size,
               "auto": resolve_precision("auto", "cpu", network_step(SimpleNamespace(net=build(
                   section.arch, section.arch_kwargs, task, resolution)), section.batch_size, resolution))}
        for name, (bf16, channels_last) in VARIANTS.items():
            row[name] = measured(section.arch, section.arch_kwargs, task, resolution, section.batch_size,
                                 bf16, channels_last, args.steps, timeout=args.timeout)
            print(task, name, row[name], "img/s" if isinstance(row[name], float) else "", flush=True)
        result["rows"].append(row)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
