"""A checkpoint holds the architecture name and arguments beside the weights, so it rebuilds itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models.registry import create_model


def save_checkpoint(path: Path, net: nn.Module, arch: str, arch_kwargs: dict[str, Any], task: str,
                    **metadata: Any) -> None:
    """Write atomically: a crash leaves no half-written checkpoint under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"arch": arch, "arch_kwargs": dict(arch_kwargs), "task": task, "metadata": metadata,
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from its checkpoint; returns (net in eval mode, checkpoint fields)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = create_model(payload["arch"], payload["task"], **payload["arch_kwargs"])
    net.load_state_dict(payload["state_dict"])
    return net.eval(), {k: v for k, v in payload.items() if k != "state_dict"}
