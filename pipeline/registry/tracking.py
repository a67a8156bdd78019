"""MLflow tracking: store set-up, runs, and the Lightning logger bound to a run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from lightning.pytorch.loggers import MLFlowLogger

from pipeline.config import RegistryConfig

logger = logging.getLogger(__name__)


def configure_tracking(cfg: RegistryConfig) -> str:
    """Point MLflow at the configured store and return the experiment id, creating it if needed."""
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        location = cfg.artifact_root.as_uri() if cfg.artifact_root is not None else None
        if cfg.artifact_root is not None:
            cfg.artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextmanager
def tracked_run(cfg: RegistryConfig, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the configured experiment, closed as FAILED if the body raises."""
    configure_tracking(cfg)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        logger.info("MLflow run %s (%s) at %s", run.info.run_id, run_name, cfg.tracking_uri)
        yield run


def lightning_logger(cfg: RegistryConfig, run_id: str) -> MLFlowLogger:
    """Lightning logger writing per-epoch metrics into the already started run."""
    return MLFlowLogger(experiment_name=cfg.experiment, tracking_uri=cfg.tracking_uri, run_id=run_id)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({name: float(value) for name, value in metrics.items()}, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)
