"""prefect.yaml's deployments served from this process (`deocclude deployments serve`).

prefect.yaml is the one definition: `prefect deploy --all` sends it to a work pool for a team,
and this module serves the same deployments (names, schedules, parameters) without one, running
each flow run in a subprocess of the serving process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from pipeline.errors import DeoccludeError

PREFECT_FILE = "prefect.yaml"


class DeploymentConfigError(DeoccludeError, ValueError):
    """prefect.yaml is missing, malformed, or names a flow that does not exist."""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    flow: Flow
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    schedules: tuple[Cron, ...]
    concurrency_limit: int | None


def _flows() -> dict[str, Flow]:
    from flows.pipeline_flow import deocclude_pipeline
    from flows.retrain import deocclude_retrain

    return {"flows/pipeline_flow.py:deocclude_pipeline": deocclude_pipeline, "flows/retrain.py:deocclude_retrain": deocclude_retrain}


def read_deployments(prefect_file: Path) -> list[DeploymentSpec]:
    try:
        document = yaml.safe_load(prefect_file.read_text())
    except FileNotFoundError:
        raise DeploymentConfigError(f"{prefect_file}: file not found") from None
    except yaml.YAMLError as error:
        raise DeploymentConfigError(f"{prefect_file}: not valid YAML: {error}") from None
    entries = (document or {}).get("deployments")
    if not isinstance(entries, list) or not entries:
        raise DeploymentConfigError(f"{prefect_file}: no 'deployments' list")
    flows = _flows()
    specs = []
    for entry in entries:
        name, entrypoint = entry.get("name"), entry.get("entrypoint")
        if entrypoint not in flows:
            raise DeploymentConfigError(f"{prefect_file}: deployment '{name}' has entrypoint '{entrypoint}'; "
                                        f"known: {', '.join(flows)}")
        schedules = tuple(Cron(item["cron"], timezone=item.get("timezone", "UTC"), active=item.get("active", True))
                          for item in entry.get("schedules") or [])
        specs.append(DeploymentSpec(name=name, flow=flows[entrypoint], description=entry.get("description", ""),
                                    tags=tuple(entry.get("tags") or ()), parameters=dict(entry.get("parameters") or {}),
                                    schedules=schedules, concurrency_limit=entry.get("concurrency_limit")))
    return specs


def runner_deployments(project_dir: Path, specs: list[DeploymentSpec], schedules: bool = True) -> list[RunnerDeployment]:
    """The specs as deployments of this checkout: `project_dir` made absolute, since the runner's
    subprocesses need not share its working directory."""
    deployments = []
    for spec in specs:
        parameters = {**spec.parameters, "project_dir": str(project_dir.resolve())}
        deployments.append(spec.flow.to_deployment(
            name=spec.name, description=spec.description, tags=list(spec.tags), parameters=parameters,
            schedules=list(spec.schedules) if schedules else None, concurrency_limit=spec.concurrency_limit,
            entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def serve_deployments(project_dir: Path, schedules: bool = True, limit: int | None = 1) -> None:
    """Serve prefect.yaml's deployments until interrupted; runs start on schedule or through the API."""
    specs = read_deployments(project_dir / PREFECT_FILE)
    serve(*runner_deployments(project_dir, specs, schedules), limit=limit)
