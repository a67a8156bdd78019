"""What the three training stages share: building networks and losses from config, the Trainer,
and logging to MLflow."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import ConfigError, InpainterConfig, RegistryConfig, SegmenterConfig
from pipeline.data.dataset import OcclusionDataset, SplitTensors
from pipeline.evaluation.report import save_grid, write_csv
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.registry import create_model, list_models
from pipeline.registry.tracking import lightning_logger, log_artifact, log_metrics
from pipeline.training.history import EpochHistory

logger = logging.getLogger(__name__)


def network_kwargs(arch: str, arch_kwargs: dict[str, Any], pretrained: bool, section: str) -> dict[str, Any]:
    """arch_kwargs plus `pretrained` for architectures that take it; refused for those that cannot."""
    entry = next((e for e in list_models() if e.name == arch), None)
    accepts = entry is not None and "pretrained" in inspect.signature(entry.builder).parameters
    if pretrained and entry is not None and not accepts and not _accepts_var_kwargs(entry.builder):
        raise ConfigError(f"params.yaml: {section}.pretrained is true but '{arch}' has no pretrained weights")
    return {**arch_kwargs, "pretrained": pretrained} if pretrained or accepts else dict(arch_kwargs)


def _accepts_var_kwargs(builder: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())


def checkpoint_kwargs(net: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments that rebuild a trained network from its checkpoint: never `pretrained` (the
    trained weights replace the ImageNet ones, whose file need not exist where it is loaded), but
    a stem frozen because it was pretrained stays frozen (TraResNet)."""
    rebuilt = dict(kwargs)
    if rebuilt.get("pretrained"):
        rebuilt["pretrained"] = False
        if any(getattr(module, "freeze_stem", False) for module in net.modules()):
            rebuilt["freeze_stem"] = True
    return rebuilt


def build_segmenter(section: SegmenterConfig) -> tuple[nn.Module, dict[str, Any]]:
    kwargs = network_kwargs(section.arch, section.arch_kwargs, section.pretrained, "segmenter")
    return create_model(section.arch, "segmenter", **kwargs), kwargs


def build_inpainter(section: InpainterConfig) -> tuple[nn.Module, dict[str, Any]]:
    kwargs = network_kwargs(section.arch, section.arch_kwargs, section.pretrained, "inpainter")
    return create_model(section.arch, "inpainter", **kwargs), kwargs


def build_feature_extractor(section: InpainterConfig, seed: int) -> VGG19Features | None:
    if section.perceptual_weights == "none":
        return None
    return VGG19Features(section.perceptual_layers, weights=section.perceptual_weights, seed=seed)


def effective_loss_weights(weights: dict[str, float], has_features: bool, has_discriminator: bool) -> dict[str, float]:
    """Drop the perceptual/style terms when no VGG19 is used, the adversarial one without a discriminator."""
    dropped = set()
    if not has_features:
        dropped |= {"perceptual", "style"}
    if not has_discriminator:
        dropped.add("adversarial")
    kept = {name: weight for name, weight in weights.items() if name not in dropped}
    if dropped & set(weights):
        logger.info("loss terms not used in this configuration: %s", sorted(dropped & set(weights)))
    return kept


def fit(module: L.LightningModule, train: SplitTensors, val: SplitTensors, resolution: int, epochs: int, batch_size: int,
        seed: int, registry: RegistryConfig, run_id: str) -> list[dict[str, float]]:
    """Train `module` for `epochs` at `resolution`, logging each epoch to the MLflow run; returns the epoch history."""
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(OcclusionDataset(train, resolution), batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(OcclusionDataset(val, resolution), batch_size=batch_size)
    history = EpochHistory()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="auto", devices=1, deterministic=True,
        logger=lightning_logger(registry, run_id), callbacks=[history],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=1,
    )
    trainer.fit(module, train_loader, val_loader)
    return history.rows


def log_training_outputs(checkpoints: list[Path], history: list[dict[str, float]], history_path: Path,
                         grid_columns: list[torch.Tensor], grid_path: Path) -> dict[str, float]:
    """Write the history CSV and sample grid, log them, the checkpoints and the last epoch's
    validation metrics to the active run; return those metrics."""
    write_csv(history, history_path)
    save_grid(grid_columns, grid_path)
    for path in (*checkpoints, history_path, grid_path):
        log_artifact(path)
    final = {name: value for name, value in history[-1].items() if name.startswith("val_")}
    log_metrics({f"final_{name}": value for name, value in final.items()})
    return final
