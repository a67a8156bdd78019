"""The Prefect flow: every dvc.yaml stage as a task, reproduced by `dvc repro --single-item`.

DVC decides what is stale and keeps dvc.lock current; Prefect adds retries, logs (the stages' own
output included), the run record and artifacts. One execution is one MLflow parent run with the
stage runs nested under it. After this flow `dvc repro` has nothing to do, and the reverse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pipeline.stages import STAGES

# Training and registration may hit transient failures (memory, a tracking server restarting);
# generation and validation are deterministic, so retrying them would only repeat the failure.
RETRIES = {"train_segmenter": 1, "train_inpainter": 1, "finetune": 1, "evaluate": 1, "register": 2}
# DVC's own chatter; what it says is summed up in the one line per stage.
DVC_CHATTER = ("Running stage '", "> bin/deocclude", "Updating lock file", "Generating lock file", "To track the changes with git",
               "To enable auto staging", "git add ", "dvc config core.autostage", "Use `dvc push`", "Stage '",
               "Verifying data sources", "Data and pipelines are up to date")


class StageFailed(RuntimeError):
    """A pipeline stage failed; the message names it, its own error is in the log above."""


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    ran: bool
    seconds: float


def stage_environment(parent_run_id: str | None) -> dict[str, str]:
    from pipeline.config import PARENT_RUN_ENV

    env = dict(os.environ)
    env["DEOCCLUDE_PYTHON"] = sys.executable  # the stages run on this flow's interpreter
    env["PYTHONUNBUFFERED"] = "1"             # their lines reach the log as they are written
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


@task(retry_delay_seconds=5)
def reproduce_stage(project_dir: str, stage: str, force: bool, parent_run_id: str | None) -> StageOutcome:
    """Run one DVC stage if DVC finds it stale (or `force`), its output into this task's log."""
    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage, *(["--force"] if force else [])]
    started = time.perf_counter()
    ran = False
    tail: list[str] = []
    with subprocess.Popen(command, cwd=project_dir, env=stage_environment(parent_run_id), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            ran = ran or line.startswith(f"Running stage '{stage}'")
            if line and not line.startswith(DVC_CHATTER):
                logger.info(line)
                tail = (tail + [line])[-5:]
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        reason = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "")
        raise StageFailed(f"stage {stage} failed (exit {process.returncode}) after {seconds:.1f} s: {reason}")
    logger.info("stage %s: %s (%.1f s)", stage, "ran" if ran else "up to date, skipped", seconds)
    return StageOutcome(stage, ran, seconds)


def _registered_elsewhere(registration: Path, tracking_uri: str) -> bool:
    return registration.is_file() and json.loads(registration.read_text()).get("tracking_uri") != tracking_uri


@flow(name="deocclude-pipeline", log_prints=True)
def deocclude_pipeline(project_dir: str = ".") -> dict[str, Any]:
    """resolve_params -> generate -> validate -> train_segmenter -> train_inpainter -> finetune -> evaluate -> register."""
    from pipeline.config import load_config
    from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL, champion_version
    from pipeline.registry.tracking import configure_tracking
    from pipeline.stages.common import Paths, pipeline_execution

    root = Path(project_dir).resolve()
    paths = Paths(root)
    cfg = load_config(root / "params.yaml")
    outcomes: dict[str, StageOutcome] = {}
    with pipeline_execution(cfg, "prefect") as (parent_run_id, tags):
        for stage in STAGES:
            # The tracking store is no DVC dependency: registering into a newly chosen store (a team
            # server after local runs) must happen even when DVC finds nothing stale.
            force = stage == "register" and _registered_elsewhere(paths.registration, cfg.registry.tracking_uri)
            reproduce = reproduce_stage.with_options(name=f"dvc-{stage}", retries=RETRIES.get(stage, 0))
            outcomes[stage] = reproduce(str(root), stage, force, parent_run_id)
            tags["stages_run"] = ",".join(name for name, outcome in outcomes.items() if outcome.ran) or "none"
    registration = json.loads(paths.registration.read_text())
    report = paths.evaluation / "report.html"
    configure_tracking(cfg.registry)
    summary = {
        "stages_run": [stage for stage, outcome in outcomes.items() if outcome.ran],
        "report": str(report),
        "version": registration["versions"][DEOCCLUSION_MODEL],
        "alias": registration["alias"],
        "champion_version": champion_version(DEOCCLUSION_MODEL),
        "champion_value": registration["value"] if registration["alias"] == "champion" else registration["previous_value"],
        "metric": registration["metric"],
        "tracking_uri": registration["tracking_uri"],
        "pipeline_run_id": parent_run_id,
    }
    create_markdown_artifact(key="deocclude-evaluation", markdown=report.read_text(),
                             description=f"evaluation; {DEOCCLUSION_MODEL} v{summary['version']} is {summary['alias']}")
    return summary


if __name__ == "__main__":
    deocclude_pipeline()
