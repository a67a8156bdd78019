"""A checkpoint holds the weights and one frozen, versioned `NetworkSettings` that says everything a
later stage needs: how to rebuild the network and how it was trained (resolution, threshold, ...).

Nothing run-specific goes in: the same weights give the same bytes, so DVC's hash of a retrained but
unchanged model stays the same and the stages after it stay cached. Which MLflow run trained it is
found from its content instead (`checkpoint_md5.<name>` tag on that run, `training_run_of`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import DeoccludeError
from pipeline.models.registry import create_model

# Bump when NetworkSettings changes meaning; older files are refused with a clear error.
CHECKPOINT_LAYOUT = 2
# Settings that files of this layout once held and that are now ignored when read: the training run's id
# (now the run's checkpoint_md5 tag), which made every retraining's file differ.
RETIRED_SETTINGS = frozenset({"training_run_id"})


class CheckpointError(DeoccludeError, ValueError):
    """A checkpoint file is missing, from another layout, or does not match its settings."""


@dataclass(frozen=True)
class NetworkSettings:
    """What a trained network's checkpoint says about it."""

    arch: str
    arch_kwargs: dict[str, Any]
    task: str                                  # segmenter | inpainter | discriminator
    resolution: int                            # the side, in pixels, it was trained and must run at
    threshold: float = 0.5                     # segmenter: occluder probability above which a pixel is masked
    opening_kernel: int = 0                    # segmenter: > 1, erosion then dilation at `resolution`
    test_time_flip: bool = False               # segmenter: its probability averaged with the mirror image's
    discriminator_arch: str | None = None      # inpainter: trained adversarially against this discriminator
    discriminator_kwargs: dict[str, Any] = field(default_factory=dict)
    finetuned_on_segmenter: str | None = None  # inpainter: the segmenter arch whose masks it was fine-tuned on

    @property
    def adversarial(self) -> bool:
        return self.discriminator_arch is not None


def save_checkpoint(path: Path, net: nn.Module, settings: NetworkSettings, discriminator: nn.Module | None = None) -> None:
    """Write atomically: a crash leaves no half-written checkpoint under the final name."""
    if settings.adversarial != (discriminator is not None):
        raise CheckpointError(f"{path}: settings.discriminator_arch={settings.discriminator_arch!r} but "
                              f"{'no' if discriminator is None else 'a'} discriminator was given")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"layout": CHECKPOINT_LAYOUT, "settings": asdict(settings), "state_dict": _cpu(net)}
    if discriminator is not None:
        payload["discriminator_state_dict"] = _cpu(discriminator)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def _cpu(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def _read(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    layout = payload.get("layout") if isinstance(payload, dict) else None
    if layout != CHECKPOINT_LAYOUT:
        raise CheckpointError(f"{path}: checkpoint layout {layout or 1} is not this version's layout {CHECKPOINT_LAYOUT}; "
                              "it was written by an older deocclude: retrain it (`dvc repro -f <stage>`)")
    known = {f.name for f in fields(NetworkSettings)}
    settings = {name: value for name, value in payload["settings"].items() if name not in RETIRED_SETTINGS}
    if set(settings) - known:
        raise CheckpointError(f"{path}: unknown settings {sorted(set(settings) - known)}")
    return {**payload, "settings": settings}


def read_settings(path: Path) -> NetworkSettings:
    return NetworkSettings(**_read(path)["settings"])


def load_checkpoint(path: Path) -> tuple[nn.Module, NetworkSettings]:
    """Rebuild the network from its checkpoint; returns (net in eval mode, its settings)."""
    payload = _read(path)
    settings = NetworkSettings(**payload["settings"])
    net = create_model(settings.arch, settings.task, **settings.arch_kwargs)
    net.load_state_dict(payload["state_dict"])
    return net.eval(), settings


def load_discriminator(path: Path) -> nn.Module:
    """The discriminator an adversarially trained inpainter was saved with."""
    payload = _read(path)
    settings = NetworkSettings(**payload["settings"])
    if not settings.adversarial:
        raise CheckpointError(f"{path}: {settings.arch} was not trained adversarially; it holds no discriminator")
    discriminator = create_model(settings.discriminator_arch, "discriminator", **settings.discriminator_kwargs)
    discriminator.load_state_dict(payload["discriminator_state_dict"])
    return discriminator.eval()


def file_md5(path: Path) -> str:
    """The file's MD5, as DVC records an output's hash in dvc.lock."""
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest()
