"""Optimizers and learning-rate schedules named in params.yaml (Adam for most papers, SGD for SOCLNET)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from pipeline.config import SCHEDULES, OptimizerConfig


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: OptimizerConfig) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if settings.name == "adam":
        return torch.optim.Adam(trainable, lr=settings.lr, betas=tuple(settings.betas))
    if settings.name == "sgd":
        return torch.optim.SGD(trainable, lr=settings.lr, momentum=settings.momentum)
    raise ValueError(f"unknown optimizer {settings.name!r}; known: adam, sgd")


def build_schedule(optimizer: torch.optim.Optimizer, settings: OptimizerConfig,
                   total_steps: int | float) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step schedule over the whole run: `onecycle` warms up to `lr` for the first `warmup`
    share of the steps, then anneals; `cosine` anneals from `lr`; `constant` has none."""
    steps = max(1, int(total_steps))
    if settings.schedule == "constant":
        return None
    if settings.schedule == "onecycle":
        # Adam's betas stay as params say: cycling them (OneCycleLR's default) would move beta1 too.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps,
                                                   pct_start=settings.warmup, cycle_momentum=False)
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    raise ValueError(f"unknown schedule {settings.schedule!r}; known: {', '.join(SCHEDULES)}")


def lightning_optimizers(optimizers: list[torch.optim.Optimizer], settings: OptimizerConfig,
                         total_steps: Callable[[], int | float]) -> Any:
    """What `configure_optimizers` returns: the optimizers, each with its per-step schedule when one
    is set; `total_steps` is asked only then (a module not attached to a Trainer has none)."""
    if settings.schedule == "constant":
        return optimizers[0] if len(optimizers) == 1 else optimizers
    schedules = [build_schedule(optimizer, settings, total_steps()) for optimizer in optimizers]
    return [{"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
            for optimizer, schedule in zip(optimizers, schedules)]
