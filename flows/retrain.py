"""Scheduled retraining: retrain only when something changed, and let the promotion gate decide.

A trigger (the cron schedule in prefect.yaml, a teammate's `prefect deployment run`, or
`deocclude retrain`) first writes its parameters into params.yaml, then asks DVC what is stale.
Nothing stale: the run ends at once and says so. Otherwise the pipeline flow runs as a subflow:
validation, the stale training stages, evaluation, and registration through the gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.changes import pending_changes
from flows.overrides import apply_overrides
from flows.pipeline_flow import deocclude_pipeline


@flow(name="deocclude-retrain", log_prints=True)
def deocclude_retrain(project_dir: str = ".", profile: str | None = None, overrides: dict[str, Any] | None = None,
                      force: bool = False, stage_timeout_minutes: dict[str, float] | None = None,
                      notify_block: str | None = None) -> dict[str, Any]:
    """Retrain what is stale in `project_dir` after applying `profile` and `overrides` (params.yaml
    keys, dotted or nested) to its params.yaml; `force` retrains even when nothing changed."""
    from pipeline.config import load_config
    from pipeline.stages.common import Paths

    logger = get_run_logger()
    root = Path(project_dir).resolve()
    edited = apply_overrides(root / "params.yaml", profile, overrides)
    if edited:
        logger.info("params.yaml: set %s from this run's parameters", ", ".join(edited))
    cfg = load_config(root / "params.yaml")
    changes = pending_changes(root, Paths(root).registration, cfg.registry.tracking_uri)
    if not changes.any and not force:
        logger.info("no retraining: %s", changes.summary())
        create_markdown_artifact(key="deocclude-retrain", markdown=f"# No retraining\n\n{changes.summary()}.\n",
                                 description="nothing changed")
        return {"retrained": False, "reason": changes.summary()}
    logger.info("retraining: %s", changes.summary() if changes.any else "forced, nothing changed")
    summary = deocclude_pipeline(project_dir=str(root), stage_timeout_minutes=stage_timeout_minutes,
                                 notify_block=notify_block)
    if summary.get("drift"):
        logger.info("data drift: %s", summary["drift"])
    return {"retrained": True, "reason": changes.summary(), "params_set": edited, **summary}
