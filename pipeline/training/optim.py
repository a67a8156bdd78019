"""Optimizers named in params.yaml (Adam for most papers, SGD for SOCLNET)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from pipeline.config import OptimizerConfig


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: OptimizerConfig) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if settings.name == "adam":
        return torch.optim.Adam(trainable, lr=settings.lr, betas=tuple(settings.betas))
    if settings.name == "sgd":
        return torch.optim.SGD(trainable, lr=settings.lr, momentum=settings.momentum)
    raise ValueError(f"unknown optimizer {settings.name!r}; known: adam, sgd")
