"""Per-epoch metric history, for DVC plots beside the MLflow run; kept in Lightning's checkpoints so
a resumed run's history still starts at epoch 0."""

from __future__ import annotations

from typing import Any

import lightning as L


class EpochHistory(L.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({name.replace("/", "_"): float(value) for name, value in sorted(trainer.callback_metrics.items())})
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]
