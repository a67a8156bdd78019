"""What every stage shares: output paths, seeding, provenance tags and atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from pipeline.config import Config


@dataclass(frozen=True)
class Paths:
    """Every stage output, relative to the project root; dvc.yaml declares the same paths."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "synthetic"

    @property
    def validation(self) -> Path:
        return self.root / "reports" / "validation"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def segmenter(self) -> Path:
        return self.models / "segmenter.pt"

    @property
    def inpainter_dir(self) -> Path:
        return self.models / "inpainter"

    @property
    def inpainter(self) -> Path:
        return self.inpainter_dir / "generator.pt"

    @property
    def discriminator(self) -> Path:
        """Present only when the inpainter trains adversarially."""
        return self.inpainter_dir / "discriminator.pt"

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


def git_commit(root: Path) -> str:
    """HEAD's commit, suffixed `-dirty` when tracked files differ from it; `unknown` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
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


def provenance_tags(cfg: Config, stage: str) -> dict[str, str]:
    return {"stage": stage, "git_commit": git_commit(cfg.root), "params_hash": cfg.params_hash}
