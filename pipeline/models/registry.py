"""Architecture name -> builder. Config names a model; `create_model` builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

TASKS = ("segmenter", "inpainter", "discriminator")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    if task not in TASKS:
        raise ValueError(f"model {name!r}: task must be one of {TASKS}, got {task!r}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        description = (builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else ""
        _REGISTRY[name] = ModelEntry(name, task, builder, description)
        return builder

    return decorate


def _load_architectures() -> None:
    from pipeline.models import ifacenet, isnet, mmrm_unet, sa_unet, soclnet, unet  # noqa: F401  (each registers its variants)


def list_models(task: str | None = None) -> list[ModelEntry]:
    _load_architectures()
    return [entry for name, entry in sorted(_REGISTRY.items()) if task is None or entry.task == task]


def create_model(name: str, task: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered architecture `name`; unknown names list the known ones."""
    _load_architectures()
    entry = _REGISTRY.get(name)
    if entry is None or (task is not None and entry.task != task):
        known = ", ".join(e.name for e in list_models(task))
        kind = f"{task} " if task else ""
        raise KeyError(f"unknown {kind}architecture {name!r}; registered: {known}")
    try:
        return entry.builder(**kwargs)
    except TypeError as error:
        raise TypeError(f"architecture {name!r}: bad arguments {kwargs}: {error}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
