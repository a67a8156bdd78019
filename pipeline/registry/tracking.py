"""MLflow tracking: store set-up, runs, and the Lightning logger bound to a run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient

from pipeline.config import RegistryConfig

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

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


@dataclass(frozen=True)
class DatasetInput:
    """A dataset version as MLflow records it: its manifest table, where it lives, and its DVC hash."""

    manifest: pd.DataFrame
    source: str
    digest: str
    name: str


def _log_dataset(dataset: DatasetInput, context: str) -> None:
    frame = mlflow.data.from_pandas(dataset.manifest, source=dataset.source, name=dataset.name, digest=dataset.digest)
    mlflow.log_input(frame, context=context, tags={"dvc_md5": dataset.digest})


@contextmanager
def tracked_run(cfg: RegistryConfig, run_name: str, tags: dict[str, str], params: dict[str, Any],
                dataset: DatasetInput | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the configured experiment, nested under the pipeline execution's run when
    there is one, closed as FAILED if the body raises."""
    configure_tracking(cfg)
    with mlflow.start_run(run_name=run_name, tags=tags, parent_run_id=cfg.parent_run_id) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if dataset is not None:
            _log_dataset(dataset, run_name)
        logger.debug("MLflow run %s (%s) at %s", run.info.run_id, run_name, cfg.tracking_uri)
        yield run


def start_pipeline_run(cfg: RegistryConfig, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """Open the parent run of one pipeline execution; stage runs nest under it. Returns its id."""
    experiment_id = configure_tracking(cfg)
    run = MlflowClient().create_run(experiment_id, tags={**tags, "mlflow.runName": run_name})
    for key, value in params.items():
        MlflowClient().log_param(run.info.run_id, key, str(value)[:500])
    logger.debug("MLflow parent run %s (%s) at %s", run.info.run_id, run_name, cfg.tracking_uri)
    return run.info.run_id


def finish_pipeline_run(cfg: RegistryConfig, run_id: str, succeeded: bool, metrics: dict[str, float],
                        tags: dict[str, str], dataset: DatasetInput | None = None) -> None:
    """Record what the execution produced on its parent run and close it."""
    configure_tracking(cfg)
    with mlflow.start_run(run_id=run_id):
        if metrics:
            mlflow.log_metrics({name: float(value) for name, value in metrics.items()})
        if tags:
            mlflow.set_tags(tags)
        if dataset is not None:
            _log_dataset(dataset, "pipeline")
    MlflowClient().set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


def open_parent_run(cfg: RegistryConfig, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """A run other runs nest under, left open across processes (an Optuna study's: its workers' trials
    nest under it); itself nested under the pipeline execution's run when there is one."""
    experiment_id = configure_tracking(cfg)
    nesting = {"mlflow.parentRunId": cfg.parent_run_id} if cfg.parent_run_id else {}
    run = MlflowClient().create_run(experiment_id, tags={**tags, **nesting, "mlflow.runName": run_name})
    for key, value in params.items():
        MlflowClient().log_param(run.info.run_id, key, str(value)[:500])
    return run.info.run_id


def record_on_run(cfg: RegistryConfig, run_id: str, metrics: dict[str, float], tags: dict[str, str],
                  artifacts: list[Path], status: str | None) -> None:
    """Log to a run that is not active in this process, and close it with `status` (FINISHED, FAILED,
    KILLED) unless None."""
    configure_tracking(cfg)
    client = MlflowClient()
    for name, value in metrics.items():
        client.log_metric(run_id, name, float(value))
    for name, value in tags.items():
        client.set_tag(run_id, name, value)
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    if status is not None:
        client.set_terminated(run_id, status)


def run_url(cfg: RegistryConfig, run_id: str, experiment_id: str) -> str | None:
    """The run's page on a tracking server; None for a local store."""
    if cfg.tracking_uri.startswith(("http://", "https://")):
        return f"{cfg.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def lightning_logger(cfg: RegistryConfig, run_id: str) -> MLFlowLogger:
    """Lightning logger writing per-epoch metrics into the already started run."""
    from lightning.pytorch.loggers import MLFlowLogger   # Lightning takes ~3 s to import; stages that log no epochs skip it

    return MLFlowLogger(experiment_name=cfg.experiment, tracking_uri=cfg.tracking_uri, run_id=run_id)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({name: float(value) for name, value in metrics.items()}, step=step)


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params({name: str(value)[:500] for name, value in params.items()})


def artifact_link(cfg: RegistryConfig, run_id: str, artifact_path: str) -> str:
    """Where a run's artifact can be opened: the run's page on a tracking server, else its local path."""
    run = MlflowClient().get_run(run_id)
    url = run_url(cfg, run_id, run.info.experiment_id)
    if url is not None:
        return f"{url}/artifacts/{artifact_path}"
    return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def checkpoint_tag(path: Path) -> str:
    """The run tag that holds the MD5 of the checkpoint file `path` (e.g. models/segmenter.pt) it trained."""
    return f"checkpoint_md5.{Path(path).stem}"


def training_run_of(path: Path, md5: str) -> str | None:
    """The latest run, in any experiment of the store, tagged as having written checkpoint `path` with
    content `md5` (a model trained under another `registry.experiment` is still found)."""
    client = MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(experiments, f"tags.`{checkpoint_tag(path)}` = '{md5}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None
