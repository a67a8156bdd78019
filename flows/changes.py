"""What changed since the pipeline last ran, in DVC's terms: the retraining flow's first question.

`dvc status` compares every stage's recorded deps (data, code, params) and outs with the workspace.
Its answer is read here into plain reasons a person can act on, grouped the way the flow reports
them: a new dataset version, params, code, outputs missing or edited, the registry moved.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DeoccludeError

PARAMS_FILES = ("params.yaml", "params.resolved.yaml")
DATA_ROOTS = ("data",)
CODE_ROOTS = ("pipeline", "bin")


class ChangeCheckFailed(DeoccludeError):
    """`dvc status` itself failed: the flow cannot tell what is stale, so it must not guess."""


@dataclass(frozen=True)
class Changes:
    """Why each stale stage is stale; empty when the last run's outputs still stand."""

    stale_stages: tuple[str, ...] = ()
    data: tuple[str, ...] = ()       # dataset paths whose content differs from the recorded version
    params: tuple[str, ...] = ()     # param keys (or files) whose values differ
    code: tuple[str, ...] = ()       # code paths that differ
    outputs: tuple[str, ...] = ()    # outputs missing, edited or not yet produced
    other: tuple[str, ...] = field(default=())  # anything else DVC says (a changed command, a new stage)
    registry_moved: bool = False     # the tracking store differs from the one the last version was registered in

    @property
    def any(self) -> bool:
        return bool(self.stale_stages) or self.registry_moved

    def summary(self) -> str:
        if not self.any:
            return "nothing changed since the last run: dataset, params, code and outputs are as recorded in dvc.lock"
        parts = []
        for label, items in (("dataset", self.data), ("params", self.params), ("code", self.code),
                             ("outputs", self.outputs), ("other", self.other)):
            if items:
                shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        if self.registry_moved:
            parts.append("registry: the tracking store differs from the last registration's")
        stages = ", ".join(self.stale_stages) or "register"
        return f"stale stages {stages} ({'; '.join(parts)})"


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return path.split("/", 1)[0] in roots


def _sorted_unique(values: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def read_dvc_status(status: dict[str, list]) -> Changes:
    """Sort `dvc status --json` into Changes."""
    data: list[str] = []
    params: list[str] = []
    code: list[str] = []
    outputs: list[str] = []
    other: list[str] = []
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed"
                other.append(f"{stage}: {entry}")
                continue
            for path, change in (entry.get("changed deps") or {}).items():
                if path in PARAMS_FILES:
                    # {"data": "modified"} for params, or "new"/"deleted" for the whole file
                    params.extend(change if isinstance(change, dict) else [path])
                elif _under(path, DATA_ROOTS):
                    data.append(path)
                elif _under(path, CODE_ROOTS):
                    code.append(path)
                else:
                    other.append(f"{stage}: {path} {change}")
            for path, change in (entry.get("changed outs") or {}).items():
                outputs.append(f"{path} ({change})")
    return Changes(stale_stages=tuple(status), data=_sorted_unique(data), params=_sorted_unique(params),
                   code=_sorted_unique(code), outputs=_sorted_unique(outputs), other=_sorted_unique(other))


def pending_changes(project_dir: Path, registration: Path | None = None, tracking_uri: str | None = None) -> Changes:
    """Ask DVC what is stale in `project_dir`; also whether the version recorded in `registration`
    was registered into another store than `tracking_uri`."""
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project_dir, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ChangeCheckFailed(f"`dvc status` failed in {project_dir} (exit {result.returncode}): "
                                f"{(result.stderr or result.stdout).strip()[-800:]}")
    try:
        status = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    except json.JSONDecodeError as error:
        raise ChangeCheckFailed(f"`dvc status --json` in {project_dir} printed no JSON: {error}") from None
    changes = read_dvc_status(status)
    if registration is not None and tracking_uri is not None and registered_elsewhere(registration, tracking_uri):
        changes = Changes(**{**changes.__dict__, "registry_moved": True})
    return changes


def registered_elsewhere(registration: Path, tracking_uri: str) -> bool:
    """The last version was registered into another tracking store (a team server after local runs)."""
    return registration.is_file() and json.loads(registration.read_text()).get("tracking_uri") != tracking_uri
