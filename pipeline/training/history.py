"""Per-epoch metric history, for DVC plots beside the MLflow run."""

from __future__ import annotations

import lightning as L


class EpochHistory(L.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({name.replace("/", "_"): float(value) for name, value in sorted(trainer.callback_metrics.items())})
        self.rows.append(row)
