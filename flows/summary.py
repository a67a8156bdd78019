"""The Prefect artifacts a pipeline run leaves: its metrics, the promotion decision, and links.

Markdown in the Prefect UI cannot show the report's images (they are files on the machine that
ran the flow), so the artifact links out instead: to the MLflow runs, the gate's page and the report.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact

# The evaluation's method groups as the table shows them, and its columns.
METHOD_ROWS = (("end_to_end", "ours: predicted mask"), ("gt_mask", "ours: ground-truth mask"),
               ("telea", "Telea: predicted mask"), ("telea_gt_mask", "Telea: ground-truth mask"),
               ("occluded_input", "occluded input, unchanged"))
METRIC_COLUMNS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # what `make mlflow-ui` serves for a local store

logger = logging.getLogger(__name__)


def mlflow_run_link(tracking_uri: str, run_id: str) -> str | None:
    """The run's page: on the tracking server, or in the local store's UI (DEOCCLUDE_MLFLOW_UI_URL or
    `make mlflow-ui`'s address). None, with a warning, when the store cannot find the run: by then the
    model is registered, and a missing link must not stop the flow before its notifications."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        experiment_id = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except MlflowException as error:
        logger.warning("no link to MLflow run %s in %s: %s", run_id, tracking_uri, error)
        return None
    if tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri
    else:
        base = os.environ.get("DEOCCLUDE_MLFLOW_UI_URL", LOCAL_MLFLOW_UI)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def drift_verdict(root: Path) -> str | None:
    """The drift stage's one-line summary, when it ran."""
    from pipeline.stages.common import Paths

    report = Paths(root).drift / "drift.json"
    return json.loads(report.read_text()).get("summary") if report.is_file() else None


def summary_markdown(summary: dict[str, Any], metrics: dict[str, Any], links: dict[str, str]) -> str:
    decision = (f"**{summary['alias']}**: version {summary['version']} of `deocclusion`. "
                f"{summary.get('gate_reason') or ''}".strip())
    champion = summary.get("champion_version")
    lines = ["# deocclude pipeline run", "", f"Promotion decision: {decision}", "",
             f"Champion now: {'version ' + str(champion) if champion else 'none'}. "
             f"Stages run: {', '.join(summary['stages_run']) or 'none (everything up to date)'}.", "",
             "| method | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for key, label in METHOD_ROWS:
        if key in metrics:
            lines.append(f"| {label} | " + " | ".join(_number(metrics[key].get(m)) for m in METRIC_COLUMNS) + " |")
    if summary.get("drift"):
        lines += [f"Data drift: {summary['drift']}.", ""]
    segmentation = metrics.get("segmentation") or {}
    if segmentation:
        lines += ["", f"Segmentation: occluder IoU {_number(segmentation.get('iou_occluder'))}, "
                      f"mIoU {_number(segmentation.get('miou'))}."]
    lines += ["", "Masked metrics inside the ground-truth occluder; L1 lower is better.", "", "Links:", ""]
    lines += [f"- [{label}]({url})" for label, url in links.items()]
    return "\n".join(lines) + "\n"


def publish_summary(root: Path, summary: dict[str, Any]) -> dict[str, str]:
    """A markdown artifact (metrics, decision, links) and link artifacts for the MLflow run and report."""
    metrics_file = root / "reports" / "eval" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    runs = {"MLflow pipeline run": summary["pipeline_run_id"], "MLflow registration run": summary["register_run_id"]}
    links = {label: url for label, run_id in runs.items() if (url := mlflow_run_link(summary["tracking_uri"], run_id))}
    if summary.get("gate_report"):
        links["promotion gate page"] = summary["gate_report"]
    links["evaluation report"] = Path(summary["report"]).resolve().as_uri()
    create_markdown_artifact(key="deocclude-run", markdown=summary_markdown(summary, metrics, links),
                             description=f"deocclusion v{summary['version']} is {summary['alias']}")
    if "MLflow pipeline run" in links:
        create_link_artifact(key="deocclude-mlflow-run", link=links["MLflow pipeline run"], link_text="MLflow pipeline run")
    create_link_artifact(key="deocclude-report", link=links["evaluation report"], link_text="evaluation report")
    return links
