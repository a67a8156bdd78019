"""What every stage shares: output paths, seeding, provenance tags and atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import Config, is_global_rank_zero
from pipeline.data.dataset import MANIFEST, sha256_file

if TYPE_CHECKING:
    from pipeline.registry.tracking import DatasetInput


@dataclass(frozen=True)
class Paths:
    """Every stage output, relative to the project root; dvc.yaml declares the same paths."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset"

    @property
    def ingested(self) -> Path:
        """Datasets added by `deocclude data ingest`, one folder each, each tracked by its own .dvc file."""
        return self.root / "data" / "ingested"

    @property
    def validation(self) -> Path:
        return self.root / "reports" / "validation"

    @property
    def drift(self) -> Path:
        return self.root / "reports" / "drift"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def segmenter(self) -> Path:
        return self.models / "segmenter.pt"

    @property
    def inpainter(self) -> Path:
        """The inpainter trained on ground-truth masks, with its discriminator when adversarial."""
        return self.models / "inpainter.pt"

    @property
    def finetuned_inpainter(self) -> Path:
        return self.models / "inpainter_finetuned.pt"

    @property
    def training_reports(self) -> Path:
        return self.root / "reports" / "train"

    @property
    def evaluation(self) -> Path:
        return self.root / "reports" / "eval"

    @property
    def registration(self) -> Path:
        return self.root / "reports" / "registration.json"


def seed_everything(seed: int) -> None:
    import lightning as L   # ~3 s to import: the stages that train import it anyway, the others need not

    L.seed_everything(seed, workers=True, verbose=False)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically so an interrupted stage leaves no valid-looking partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


# What decides a model: a change here, committed or not, makes the recorded commit `-dirty`. Not
# dvc.lock or params.resolved.yaml, which the pipeline itself rewrites as it runs.
SOURCE_PATHS = ("pipeline", "flows", "bin", "dvc.yaml", "params.yaml", "pyproject.toml")


def git_commit(root: Path) -> str:
    """HEAD's commit, suffixed `-dirty` when the code or params differ from it (edited, staged or
    new files under SOURCE_PATHS); `unknown` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        present = [path for path in SOURCE_PATHS if (root / path).exists()]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *present], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def data_version(root: Path, dataset: Path) -> str:
    """The DVC hash of the dataset directory as recorded in dvc.lock by the generate stage."""
    lock = root / "dvc.lock"
    relative = dataset.relative_to(root).as_posix()
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if out.get("path") == relative and out.get("md5"):
                    return str(out["md5"])
    raise FileNotFoundError(f"{lock}: no DVC hash recorded for {relative}; run the pipeline through `dvc repro` "
                            "or the Prefect flow so the dataset is versioned before registration")


def dataset_tag(cfg: Config) -> str:
    """The dataset's human tag (its id is the DVC hash): data.tag, else what it is made from."""
    data = cfg.data
    if data.tag:
        return data.tag
    if data.source == "synthetic":
        return f"synthetic-{data.count}x{data.resolution}px-seed{cfg.seed}"
    return f"{data.source}:{Path(data.raw).name}@{data.resolution}px"


def provenance_tags(cfg: Config, stage: str) -> dict[str, str]:
    tags = {"stage": stage, "git_commit": git_commit(cfg.root), "params_hash": cfg.params_hash, "data_tag": dataset_tag(cfg)}
    try:
        tags["data_version"] = data_version(cfg.root, Paths(cfg.root).dataset)
    except FileNotFoundError:  # before the generate stage has been recorded in dvc.lock
        pass
    return tags


def dataset_input(cfg: Config) -> DatasetInput:
    """The dataset as an MLflow input, identified by its DVC hash (the manifest's sha256 when the
    stage runs outside DVC, so nothing is recorded under a hash DVC never computed)."""
    import pandas as pd

    from pipeline.registry.tracking import DatasetInput

    dataset = Paths(cfg.root).dataset
    manifest = dataset / MANIFEST
    try:
        digest = data_version(cfg.root, dataset)
    except FileNotFoundError:
        digest = f"manifest-{sha256_file(manifest)[:27]}"  # MLflow keeps at most 36 characters
    return DatasetInput(pd.read_csv(manifest), str(dataset), digest, dataset.name)


@contextmanager
def stage_run(cfg: Config, stage: str, params: dict[str, Any]) -> Iterator[Any]:
    """The stage's MLflow run: provenance tags, the dataset input, nested under the execution's run.
    The other processes of a distributed training run get none: they only train (see `fit`)."""
    from pipeline.registry.tracking import tracked_run

    if not is_global_rank_zero():
        yield SimpleNamespace(info=SimpleNamespace(run_id=None))
        return
    with tracked_run(cfg.registry, stage, provenance_tags(cfg, stage), params, dataset_input(cfg)) as run:
        yield run


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow metric names: {"a": {"b": 1}} -> {"a.b": 1.0}; non-numbers dropped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


@contextmanager
def pipeline_execution(cfg: Config, orchestrator: str) -> Iterator[tuple[str, dict[str, str]]]:
    """One execution of the pipeline as one MLflow parent run: yields its id (the stages nest under
    it through PARENT_RUN_ENV) and a dict of tags to add; closes it with the evaluation metrics, the
    registered version and the dataset input, or as FAILED."""
    from pipeline.registry.tracking import finish_pipeline_run, start_pipeline_run

    paths = Paths(cfg.root)
    run_id = start_pipeline_run(cfg.registry, "pipeline", {
        "git_commit": git_commit(cfg.root), "profile": cfg.profile, "params_hash": cfg.params_hash,
        "orchestrator": orchestrator}, {"profile": cfg.profile, "params_hash": cfg.params_hash})
    tags: dict[str, str] = {"data_tag": dataset_tag(cfg)}
    try:
        yield run_id, tags
    except BaseException:
        finish_pipeline_run(cfg.registry, run_id, False, {}, tags)
        raise
    metrics_path = paths.evaluation / "metrics.json"
    metrics = flat_metrics(json.loads(metrics_path.read_text())) if metrics_path.is_file() else {}
    if paths.registration.is_file():
        registration = json.loads(paths.registration.read_text())
        tags.update({"data_version": registration["data_version"], "deocclusion_version": registration["model_uri"],
                     "deocclusion_alias": registration["alias"]})
    dataset = dataset_input(cfg) if (paths.dataset / MANIFEST).is_file() else None
    finish_pipeline_run(cfg.registry, run_id, True, metrics, tags, dataset)
