"""`deocclude runs compare`: pipeline runs or registered versions side by side, from any MLflow
store (the local sqlite one or a tracking server), in the terminal and as an HTML page."""

from __future__ import annotations

import csv
import html
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry.gate import PairedComparison, paired_comparison
from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL
from pipeline.registry.pages import compare_page

SCORED_METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
PER_IMAGE_ARTIFACTS = ("gate/per_image.csv", "evaluation/per_image.csv")
BINS_ARTIFACT = "evaluation/by_mask_ratio.csv"
VERSION_REF = re.compile(r"^(?:models:/(?P<name>[^/@]+)/|v)?(?P<version>\d+)$")


@dataclass
class RunView:
    """What one compared item holds: its params, metrics, and per-image and per-bin scores if logged."""

    label: str
    run_id: str
    data_version: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    per_image: dict[str, dict[str, float]] | None       # sample -> metric, end_to_end
    bins: list[dict[str, str]] | None                   # rows of by_mask_ratio.csv


def _download(client: MlflowClient, run_id: str, path: str, workdir: Path) -> Path | None:
    try:
        return Path(client.download_artifacts(run_id, path, str(workdir)))
    except (MlflowException, OSError):
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _per_image(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        if (row.get("method") or row.get("group") or "end_to_end") != "end_to_end":
            continue
        scores[row["sample"]] = {m: float(row[m]) for m in SCORED_METRICS if row.get(m) not in (None, "")}
    return scores


def resolve(client: MlflowClient, ref: str, workdir: Path) -> RunView:
    """A registered version (`models:/deocclusion/3`, `v3`, `3`) or an MLflow run id (a pipeline's
    parent run gathers its stage runs: their params, the register or evaluate run's artifacts)."""
    match = VERSION_REF.match(ref)
    if match:
        name = match.group("name") or DEOCCLUSION_MODEL
        try:
            record = client.get_model_version(name, match.group("version"))
        except MlflowException:
            raise LookupError(f"{ref}: no such registered version ({name} version {match.group('version')})") from None
        run_ids, label = [record.run_id], f"{name} v{record.version}"
        # A version registered inside a pipeline execution: its parent run gathers the training runs too.
        parent = client.get_run(record.run_id).data.tags.get("mlflow.parentRunId")
        if parent:
            run_ids = [parent]
    else:
        try:
            client.get_run(ref)
        except MlflowException:
            raise LookupError(f"{ref}: neither a registered version nor a run in this tracking store") from None
        run_ids, label = [ref], f"run {ref[:8]}"
    root = client.get_run(run_ids[0])
    children = client.search_runs([root.info.experiment_id], f"tags.`mlflow.parentRunId` = '{root.info.run_id}'")
    runs = [root, *sorted(children, key=lambda run: run.info.start_time)]
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for run in runs:
        params.update(run.data.params)
    # The register run logs the resolved params as `params.<key>`: the one complete, comparable set.
    snapshot = {key.removeprefix("params."): value for key, value in params.items() if key.startswith("params.")}
    params = snapshot or params
    for run in reversed(runs):  # the root's own values win
        metrics.update(run.data.metrics)
    data_version = next((run.data.tags["data_version"] for run in runs if "data_version" in run.data.tags), None)
    per_image = bins = None
    target = workdir / re.sub(r"\W", "_", ref)
    for run in runs:
        for path in PER_IMAGE_ARTIFACTS:
            if per_image is None and (found := _download(client, run.info.run_id, path, target)) is not None:
                per_image = _per_image(_read_csv(found))
        if bins is None and (found := _download(client, run.info.run_id, BINS_ARTIFACT, target)) is not None:
            bins = _read_csv(found)
    return RunView(label, root.info.run_id, data_version, params, metrics, per_image or None, bins)


@dataclass
class Comparison:
    views: list[RunView]
    params: list[list[Any]]              # [name, value per view] for params that differ
    metrics: list[list[Any]]             # [name, value per view, difference to the first per later view]
    intervals: list[tuple[str, str, PairedComparison]]   # (label, metric, interval) against the first view
    notes: list[str]


def compare(views: Sequence[RunView], resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Comparison:
    views = list(views)
    names = sorted({key for view in views for key in view.params})
    params = [[key, *[view.params.get(key) for view in views]] for key in names
              if len({view.params.get(key) for view in views}) > 1]
    metric_names = sorted({key for view in views for key in view.metrics})
    metrics = []
    for key in metric_names:
        values = [view.metrics.get(key) for view in views]
        first = values[0]
        differences = [None if first is None or v is None else v - first for v in values[1:]]
        metrics.append([key, *values, *differences])
    intervals, notes = [], []
    base = views[0]
    for view in views[1:]:
        if base.per_image is None or view.per_image is None:
            notes.append(f"{view.label}: no per-image scores for both; no interval against {base.label}")
            continue
        if base.data_version != view.data_version:
            notes.append(f"{view.label}: tested on data {view.data_version}, {base.label} on {base.data_version}; "
                         "per-image scores are not paired")
            continue
        for metric in SCORED_METRICS:
            ours = {s: v[metric] for s, v in view.per_image.items() if metric in v}
            theirs = {s: v[metric] for s, v in base.per_image.items() if metric in v}
            if set(ours) & set(theirs):
                intervals.append((view.label, metric, paired_comparison(metric, ours, theirs, resamples, level, seed)))
    return Comparison(views, params, metrics, intervals, notes)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_text(comparison: Comparison, max_width: int = 28) -> str:
    labels = [view.label for view in comparison.views]
    lines = ["Params that differ:" if comparison.params else "Params: none differ."]
    for name, *values in comparison.params:
        lines.append(f"  {name:<40} " + "  ".join(f"{_cell(v)[:max_width]:>{max_width}}" for v in values))
    header = "  ".join(f"{label:>14}" for label in labels) + "  " + "  ".join(
        f"{'Δ ' + label:>14}" for label in labels[1:])
    lines += ["", f"  {'metric':<44} {header}"]
    for name, *values in comparison.metrics:
        lines.append(f"  {name:<44} " + "  ".join(f"{_cell(v):>14}" for v in values))
    if comparison.intervals:
        lines += ["", f"Paired bootstrap, per-image improvement of each over {labels[0]} (end_to_end):"]
        for label, _, interval in comparison.intervals:
            lines.append(f"  {label}: {interval.describe()}")
    lines += [f"Note: {note}" for note in comparison.notes]
    return "\n".join(lines)


def render_html(comparison: Comparison) -> str:
    labels = [view.label for view in comparison.views]
    bins: dict[str, dict[str, list[float | None]]] = {}
    bin_names: list[str] = []
    for view in comparison.views:
        if not view.bins:
            continue
        bin_names = bin_names or [row["mask_ratio_bin"] for row in view.bins]
        for metric in SCORED_METRICS:
            column = f"end_to_end.{metric}"
            bins.setdefault(column, {})[view.label] = [float(row[column]) if row.get(column) not in (None, "")
                                                       else None for row in view.bins]
    intervals = [(f"{label}: {metric}", i.mean_improvement, i.lower, i.upper) for label, metric, i in comparison.intervals]
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in comparison.notes)
    return compare_page(f"Comparison: {' vs '.join(labels)}", labels, comparison.params, comparison.metrics,
                        intervals, bins, bin_names).replace("</body>", f"{notes}</body>")


def compare_refs(refs: Sequence[str], html_path: Path | None) -> tuple[str, Comparison]:
    """Resolve, compare, write the HTML page if asked; returns the terminal text."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="compare-") as workdir:
        views = [resolve(client, ref, Path(workdir)) for ref in refs]
    comparison = compare(views)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(comparison))
    return render_text(comparison), comparison
