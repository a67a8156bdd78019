"""The training loop shared by the three training stages: data loaders, Trainer, MLflow logging."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.config import RegistryConfig
from pipeline.data.dataset import OcclusionDataset, SplitTensors
from pipeline.evaluation.report import save_grid, write_csv
from pipeline.registry.tracking import lightning_logger, log_artifact
from pipeline.training.history import EpochHistory

logger = logging.getLogger(__name__)


def fit(module: L.LightningModule, train: SplitTensors, val: SplitTensors, epochs: int, batch_size: int, seed: int,
        registry: RegistryConfig, run_id: str) -> list[dict[str, float]]:
    """Train `module` for `epochs`, logging each epoch to the MLflow run; returns the epoch history."""
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(OcclusionDataset(train), batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(OcclusionDataset(val), batch_size=batch_size)
    history = EpochHistory()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="auto", devices=1, deterministic=True,
        logger=lightning_logger(registry, run_id), callbacks=[history],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=1,
    )
    trainer.fit(module, train_loader, val_loader)
    return history.rows


def log_training_outputs(checkpoint: Path, history: list[dict[str, float]], history_path: Path,
                         grid_columns: list[torch.Tensor], grid_path: Path) -> None:
    """Write the history CSV and sample grid, then log them and the checkpoint to the active run."""
    write_csv(history, history_path)
    save_grid(grid_columns, grid_path)
    for path in (checkpoint, history_path, grid_path):
        log_artifact(path)
