"""The Prefect flow: every dvc.yaml stage as a task, reproduced by `dvc repro --single-item`.

DVC decides what is stale and keeps dvc.lock current; Prefect adds retries, timeouts, logs (the
stages' own output included), the run record and artifacts. One execution is one MLflow parent run
with the stage runs nested under it. After this flow `dvc repro` has nothing to do, and the reverse.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from flows.changes import registered_elsewhere
from flows.notify import notify
from flows.summary import drift_verdict, publish_summary
from pipeline.stages import STAGES

# Generous ceilings that catch a hung stage, not a slow one; a profile that trains for days raises
# them through the flow's `stage_timeout_minutes` parameter (prefect.yaml sets it per deployment).
DEFAULT_STAGE_TIMEOUT_MINUTES = {"resolve_params": 10, "generate": 240, "validate": 120, "drift": 60, "train_segmenter": 1440,
                                 "train_inpainter": 1440, "finetune": 720, "evaluate": 240, "register": 60,
                                 "hpo": 2880}
TRANSIENT_RETRIES = 3
BACKOFF_SECONDS = 10  # 10, 20, 40 s between attempts
# What a failure that may pass on its own prints: the network, a server restarting, a busy store.
# Anything else (a bug, bad data, bad params) fails the same way again, so it is not retried.
TRANSIENT_MARKERS = ("ConnectionError", "Connection refused", "ConnectionResetError", "RemoteDisconnected",
                     "Max retries exceeded", "Temporary failure in name resolution", "EndpointConnectionError",
                     "ReadTimeout", "ConnectTimeout", "503 Service Unavailable", "502 Bad Gateway",
                     "504 Gateway Time-out", "429 Too Many Requests", "SlowDown", "RequestTimeout",
                     "database is locked", "too many connections")
# DVC's own chatter; what it says is summed up in the one line per stage.
DVC_CHATTER = ("Running stage '", "> bin/deocclude", "Updating lock file", "Generating lock file", "To track the changes with git",
               "To enable auto staging", "git add ", "dvc config core.autostage", "Use `dvc push`", "Stage '",
               "Verifying data sources", "Data and pipelines are up to date")


class StageFailed(RuntimeError):
    """A pipeline stage failed; the message names it, its own output is in the log above."""

    def __init__(self, stage: str, message: str, transient: bool = False):
        super().__init__(message)
        self.stage = stage
        self.transient = transient

    def __reduce__(self):  # Prefect pickles task exceptions into the task's state
        return type(self), (self.stage, str(self), self.transient)


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


def _kill_after(process: subprocess.Popen, seconds: float, expired: threading.Event) -> threading.Timer:
    def kill() -> None:
        expired.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the stage and everything it started
        except ProcessLookupError:
            pass

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    return timer


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    error = state.data
    return isinstance(error, StageFailed) and error.transient


@task(retries=TRANSIENT_RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=BACKOFF_SECONDS),
      retry_jitter_factor=0.2, retry_condition_fn=_retry_if_transient)
def reproduce_stage(project_dir: str, stage: str, force: bool, parent_run_id: str | None,
                    timeout_minutes: float | None = None) -> StageOutcome:
    """Run one DVC stage if DVC finds it stale (or `force`), its output into this task's log."""
    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage, *(["--force"] if force else [])]
    started = time.perf_counter()
    ran = False
    tail: list[str] = []
    expired = threading.Event()
    with subprocess.Popen(command, cwd=project_dir, env=stage_environment(parent_run_id), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True) as process:
        timer = _kill_after(process, timeout_minutes * 60, expired) if timeout_minutes else None
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            ran = ran or line.startswith(f"Running stage '{stage}'")
            if line and not line.startswith(DVC_CHATTER):
                logger.info(line)
                tail = (tail + [line])[-40:]
        if timer is not None:
            timer.cancel()
    seconds = time.perf_counter() - started
    if expired.is_set():
        raise StageFailed(stage, f"stage {stage} timed out after {timeout_minutes:g} min and was stopped")
    if process.returncode != 0:
        transient = any(marker in line for line in tail for marker in TRANSIENT_MARKERS)
        # The stage's own error, not DVC's "ERROR: failed to reproduce" that follows it.
        errors = [line for line in tail if "error" in line.lower() and not line.startswith("ERROR: failed to reproduce")]
        reason = errors[-1] if errors else (tail[-1] if tail else "")
        kind = "transient failure, retried" if transient else "failed"
        raise StageFailed(stage, f"stage {stage} {kind} (exit {process.returncode}) after {seconds:.1f} s: {reason}",
                          transient)
    logger.info("stage %s: %s (%.1f s)", stage, "ran" if ran else "up to date, skipped", seconds)
    return StageOutcome(stage, ran, seconds)


def reproduce_stages(root: Path, stages: Sequence[str], parent_run_id: str | None, force: Sequence[str] = (),
                     timeout_minutes: dict[str, float] | None = None, on_outcome: Any = None) -> dict[str, StageOutcome]:
    """The stages in order, each a task; the first that fails for good raises StageFailed naming it,
    and no later stage runs on its stale inputs."""
    timeouts = {**DEFAULT_STAGE_TIMEOUT_MINUTES, **(timeout_minutes or {})}
    outcomes: dict[str, StageOutcome] = {}
    for stage in stages:
        reproduce = reproduce_stage.with_options(name=f"dvc-{stage}")
        outcomes[stage] = reproduce(str(root), stage, stage in force, parent_run_id, timeouts.get(stage))
        if on_outcome is not None:
            on_outcome(outcomes)
    return outcomes


def run_pipeline(root: Path, stage_timeout_minutes: dict[str, float] | None = None) -> dict[str, Any]:
    """Every stage under one MLflow parent run; the registration's outcome as a summary dict."""
    from pipeline.config import load_config
    from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL, champion_version
    from pipeline.registry.tracking import configure_tracking
    from pipeline.stages.common import Paths, pipeline_execution

    paths = Paths(root)
    cfg = load_config(root / "params.yaml")
    # The tracking store is no DVC dependency: registering into a newly chosen store (a team
    # server after local runs) must happen even when DVC finds nothing stale.
    force = ["register"] if registered_elsewhere(paths.registration, cfg.registry.tracking_uri) else []
    with pipeline_execution(cfg, "prefect") as (parent_run_id, tags):
        def tag_stages_run(outcomes: dict[str, StageOutcome]) -> None:
            tags["stages_run"] = ",".join(name for name, outcome in outcomes.items() if outcome.ran) or "none"

        outcomes = reproduce_stages(root, STAGES, parent_run_id, force, stage_timeout_minutes, tag_stages_run)
    registration = json.loads(paths.registration.read_text())
    configure_tracking(cfg.registry)
    return {
        "stages_run": [stage for stage, outcome in outcomes.items() if outcome.ran],
        "report": str(paths.evaluation / "report.html"),
        "version": registration["versions"][DEOCCLUSION_MODEL],
        "alias": registration["alias"],
        "champion_version": champion_version(DEOCCLUSION_MODEL),
        "champion_value": registration["value"] if registration["alias"] == "champion" else registration["previous_value"],
        "metric": registration["metric"],
        "tracking_uri": registration["tracking_uri"],
        "pipeline_run_id": parent_run_id,
        "register_run_id": registration["run_id"],
        "gate_reason": (registration.get("gate") or {}).get("reason", ""),
        "gate_report": (registration.get("gate") or {}).get("report", ""),
        "drift": drift_verdict(root),
    }


@flow(name="deocclude-pipeline", log_prints=True)
def deocclude_pipeline(project_dir: str = ".", stage_timeout_minutes: dict[str, float] | None = None,
                       notify_block: str | None = None) -> dict[str, Any]:
    """resolve_params -> generate -> validate -> train_segmenter -> train_inpainter -> finetune -> evaluate -> register.

    `notify_block`: a saved Prefect block ("webhook/NAME" or a notification block's slug) told of a
    promotion or a failure."""
    root = Path(project_dir).resolve()
    try:
        summary = run_pipeline(root, stage_timeout_minutes)
    except Exception as error:
        notify(notify_block, "failed", {"project": str(root), "error": str(error)})
        raise
    publish_summary(root, summary)
    if summary["alias"] == "champion":
        notify(notify_block, "promoted", summary)
    return summary


if __name__ == "__main__":
    deocclude_pipeline()
