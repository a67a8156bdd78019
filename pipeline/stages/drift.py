"""Stage drift: the dataset against a reference version (drift.reference), KS tests per image feature.

`previous` is the data/dataset version git HEAD's dvc.lock records, read from the local DVC cache;
a folder path is any dataset with a manifest.csv; empty checks nothing. The report is written, and
logged on the stage's MLflow run, before drift with `on_drift: fail` stops the pipeline."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import yaml

from pipeline.config import PREVIOUS_DATASET, Config
from pipeline.data.dataset import MANIFEST, sha256_file
from pipeline.data.drift import (
    DatasetFiles,
    DriftDetected,
    DriftError,
    DriftThresholds,
    cached_dataset,
    dataset_features,
    drift_plots,
    drift_report,
    folder_dataset,
    ks_tests,
    render_html,
)
from pipeline.stages.common import Paths, data_version, flat_metrics, stage_run, write_json, write_text

logger = logging.getLogger(__name__)
DATASET_OUTS = ("data/dataset", "data/synthetic")   # the second: the dataset's name in older commits


def _manifest_id(root: Path) -> str:
    return f"manifest-{sha256_file(root / MANIFEST)[:12]}"


def current_dataset(cfg: Config) -> DatasetFiles:
    dataset = Paths(cfg.root).dataset
    try:
        dataset_id = data_version(cfg.root, dataset)
    except FileNotFoundError:   # run outside DVC: no hash recorded yet
        dataset_id = _manifest_id(dataset)
    return folder_dataset(dataset, dataset_id, dataset.relative_to(cfg.root).as_posix())


def previous_dataset(root: Path) -> tuple[DatasetFiles | None, str]:
    """The dataset version HEAD's dvc.lock records, from the local DVC cache; or None and why not."""
    lock = subprocess.run(["git", "show", "HEAD:./dvc.lock"], cwd=root, capture_output=True, text=True)
    if lock.returncode != 0:
        return None, "git HEAD records no dvc.lock yet (the first dataset version)"
    stages = (yaml.safe_load(lock.stdout) or {}).get("stages", {})
    out = next((o for o in stages.get("generate", {}).get("outs", []) if o.get("path") in DATASET_OUTS), None)
    if out is None or not out.get("md5"):
        return None, "git HEAD's dvc.lock records no dataset version"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    try:
        return cached_dataset(root / ".dvc" / "cache", str(out["md5"]), f"{out['path']} at {commit or 'HEAD'}"), ""
    except DriftError as error:
        return None, str(error)


def reference_dataset(cfg: Config) -> tuple[DatasetFiles | None, str]:
    reference = cfg.drift.reference
    if not reference:
        return None, "drift.reference is empty"
    if reference == PREVIOUS_DATASET:
        return previous_dataset(cfg.root)
    folder = Path(reference) if Path(reference).is_absolute() else cfg.root / reference
    if not (folder / MANIFEST).is_file():
        raise DriftError(f"{cfg.root / 'params.yaml'}: drift.reference {reference!r}: {folder / MANIFEST} not found; "
                         f"name a dataset folder (e.g. data/ingested/NAME), '{PREVIOUS_DATASET}', or leave it empty")
    record = folder.with_name(folder.name + ".dvc")   # `deocclude data ingest` tracks each dataset with its own .dvc file
    outs = (yaml.safe_load(record.read_text()) or {}).get("outs", []) if record.is_file() else []
    dataset_id = str(outs[0]["md5"]) if outs and outs[0].get("md5") else _manifest_id(folder)
    return folder_dataset(folder, dataset_id, reference), ""


def run(cfg: Config) -> dict:
    paths = Paths(cfg.root)
    drift = cfg.drift
    thresholds = DriftThresholds(p_value=drift.p_value, statistic=drift.statistic)
    current = current_dataset(cfg)
    reference, why_none = reference_dataset(cfg)
    plots: dict[str, str] = {}
    if reference is None:
        report = drift_report(None, current, [], thresholds, drift.on_drift, {}, why_none)
        logger.warning("drift: no reference (%s); nothing compared", why_none)
    else:
        reference_features = dataset_features(reference, cfg.data.resolution, drift.sample, cfg.seed)
        current_features = dataset_features(current, cfg.data.resolution, drift.sample, cfg.seed)
        tests = ks_tests(reference_features, current_features, thresholds)
        sampled = {"reference": len(next(iter(reference_features.values()))),
                   "current": len(next(iter(current_features.values())))}
        report = drift_report(reference, current, tests, thresholds, drift.on_drift, sampled)
        plots = drift_plots(reference_features, current_features)
    write_json(paths.drift / "drift.json", report)
    write_text(paths.drift / "drift.html", render_html(report, plots))
    with stage_run(cfg, "drift", {"reference": drift.reference or "none", "on_drift": drift.on_drift,
                                  "p_value": drift.p_value, "statistic": drift.statistic, "sample": drift.sample}):
        from pipeline.registry.tracking import log_artifact, log_metrics, set_tags

        metrics = {f"drift.{group}.{key}": value for group, summary in report["groups"].items()
                   for key, value in flat_metrics(summary).items()}
        log_metrics({**metrics, "drift.drifted": float(report["drifted"])})
        set_tags({"drift_verdict": report["verdict"], "drift_reference": (report["reference"] or {}).get("id", "none")})
        for name in ("drift.json", "drift.html"):
            log_artifact(paths.drift / name, "drift")
    if report["drifted"]:
        message = (f"{report['summary']}; drifted features: {', '.join(report['drifted_features'])}; "
                   f"report: {paths.drift / 'drift.html'}")
        if drift.on_drift == "fail":
            raise DriftDetected(f"{message} (drift.on_drift is fail)")
        logger.warning("%s (drift.on_drift is warn: going on)", message)
    elif reference is not None:
        logger.info("drift: %s", report["summary"])
    return report
