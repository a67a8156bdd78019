"""The Prefect flow: every dvc.yaml stage as a task, reproduced through DVC's Python API.

DVC decides what is stale and keeps dvc.lock current; Prefect adds retries, logs, the run record
and artifacts. So after this flow, `dvc repro` has nothing to do, and the reverse.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

STAGES = ("generate", "validate", "train_segmenter", "train_inpainter", "finetune", "evaluate", "register")
# Training and registration may hit transient failures (memory, a tracking server restarting);
# generation and validation are deterministic, so retrying them would only repeat the failure.
RETRIES = {"train_segmenter": 1, "train_inpainter": 1, "finetune": 1, "evaluate": 1, "register": 2}


class StageFailed(RuntimeError):
    """A pipeline stage failed; its own error was printed above by the stage command."""


@task(retry_delay_seconds=5)
def reproduce_stage(project_dir: str, stage: str, force: bool = False) -> bool:
    """Run one DVC stage if DVC finds it stale (or `force`); returns whether it ran."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    logger = get_run_logger()
    try:
        with Repo(project_dir) as repo:
            reproduced = repo.reproduce(stage, single_item=True, force=force)
    except DvcException as error:
        raise StageFailed(f"stage {stage} failed: {error}") from None
    ran = any(getattr(item, "addressing", None) == stage for item in reproduced)
    logger.info("stage %s: %s", stage, "reproduced" if ran else "up to date, skipped")
    return ran


def _registered_elsewhere(root: Path, tracking_uri: str) -> bool:
    registration = root / "reports" / "registration.json"
    return registration.is_file() and json.loads(registration.read_text()).get("tracking_uri") != tracking_uri


@flow(name="deocclude-pipeline", log_prints=True)
def deocclude_pipeline(project_dir: str = ".") -> dict[str, Any]:
    """generate -> validate -> train_segmenter -> train_inpainter -> finetune -> evaluate -> register."""
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    # DVC runs each stage as `deocclude <stage>`: use this interpreter's console scripts.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    from pipeline.config import load_config
    from pipeline.registry.models import DEOCCLUSION_MODEL, champion_version
    from pipeline.registry.tracking import configure_tracking

    registry = load_config(root / "params.yaml").registry
    ran = {}
    for stage in STAGES:
        # The tracking store is no DVC dependency: registering into a newly chosen store (a team
        # server after local runs) must happen even when DVC finds nothing stale.
        force = stage == "register" and _registered_elsewhere(root, registry.tracking_uri)
        ran[stage] = reproduce_stage.with_options(name=f"dvc-{stage}", retries=RETRIES.get(stage, 0))(str(root), stage, force)
    registration = json.loads((root / "reports" / "registration.json").read_text())
    report = root / "reports" / "eval" / "report.md"
    configure_tracking(registry)
    champion = champion_version(DEOCCLUSION_MODEL)
    summary = {
        "stages_run": [stage for stage, did_run in ran.items() if did_run],
        "report": str(report),
        "version": registration["versions"][DEOCCLUSION_MODEL],
        "alias": registration["alias"],
        "champion_version": champion,
        "champion_value": registration["value"] if registration["alias"] == "champion" else registration["previous_value"],
        "metric": registration["metric"],
        "tracking_uri": registration["tracking_uri"],
    }
    create_markdown_artifact(key="deocclude-evaluation", markdown=report.read_text(),
                             description=f"evaluation; {DEOCCLUSION_MODEL} v{summary['version']} is {summary['alias']}")
    logger.info("stages run: %s; %s champion is version %s", summary["stages_run"] or "none", DEOCCLUSION_MODEL, champion)
    return summary


if __name__ == "__main__":
    deocclude_pipeline()
