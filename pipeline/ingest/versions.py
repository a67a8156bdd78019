"""Dataset versions: each one's id is its DVC hash; its tag is the name a person gives it.

The pipeline's dataset (data/dataset) gets a new version whenever the generate stage's output
changes; dvc.lock records its hash in every commit, and the validate stage's summary (a DVC metric)
says whether it passed. Datasets added by `deocclude data ingest` are tracked by their own .dvc files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
import yaml

from pipeline.ingest.ingest import INGEST_RECORD, IngestError

DATASET_OUTS = ("data/dataset", "data/synthetic")  # the second: its name before ingestion existed
VALIDATION_SUMMARY = "reports/validation/summary.json"


@dataclass(frozen=True)
class DatasetVersion:
    id: str                 # the DVC hash (md5 of the directory listing, ".dir")
    tag: str
    path: str
    files: int | None
    bytes: int | None
    validation: str         # passed / failed (n of m expectations) / checked at ingest / unknown
    where: str              # the commit (short) that recorded it, or "workspace"


def track_with_dvc(root: Path, target: Path) -> str | None:
    """`dvc add` an ingested dataset; its DVC hash. Without a DVC repo, None. If DVC refuses, the
    dataset is removed again (an ingest adds all or nothing)."""
    import shutil

    if not (root / ".dvc").is_dir():
        return None
    result = subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(target.relative_to(root))], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError(f"{target}: `dvc add` failed, so the dataset was removed again: "
                          f"{(result.stderr or result.stdout).strip()[-600:]}")
    record = yaml.safe_load(target.with_name(target.name + ".dvc").read_text())
    return str(record["outs"][0]["md5"])


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def _summary_status(root: Path, md5: str | None) -> str:
    """The validate stage's verdict, read from DVC's cache by the summary's hash."""
    if not md5:
        return "unknown (not validated)"
    cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not cached.is_file():
        return "unknown (summary not in the local cache; dvc pull)"
    summary = json.loads(cached.read_text())
    if summary.get("success"):
        return f"passed ({summary.get('evaluated_expectations', '?')} expectations)"
    return f"failed ({summary.get('failed_expectations', '?')} of {summary.get('evaluated_expectations', '?')} expectations)"


def _from_lock(root: Path, lock_text: str, where: str, tag: str) -> DatasetVersion | None:
    stages = (yaml.safe_load(lock_text) or {}).get("stages", {})
    out = next((o for o in stages.get("generate", {}).get("outs", []) if o.get("path") in DATASET_OUTS), None)
    if out is None or not out.get("md5"):
        return None
    summary = next((o.get("md5") for o in stages.get("validate", {}).get("outs", []) if o.get("path") == VALIDATION_SUMMARY),
                   None)
    return DatasetVersion(str(out["md5"]), tag, str(out["path"]), out.get("nfiles"), out.get("size"),
                          _summary_status(root, summary), where)


def list_versions(root: Path, tag: str) -> list[DatasetVersion]:
    """Every version of the pipeline's dataset that dvc.lock recorded (workspace first, then the git
    history, each hash once), then every ingested dataset."""
    versions: list[DatasetVersion] = []
    seen: set[str] = set()
    lock = root / "dvc.lock"
    candidates = [("workspace", lock.read_text())] if lock.is_file() else []
    for line in _git(root, "log", "--format=%h %cs", "--", "dvc.lock").splitlines():
        commit, date = line.split(" ", 1)
        candidates.append((f"{commit} ({date})", _git(root, "show", f"{commit}:dvc.lock")))
    for where, text in candidates:
        version = _from_lock(root, text, where, tag if where == "workspace" else "")
        if version is not None and version.id not in seen:
            seen.add(version.id)
            versions.append(version)
    for record in sorted((root / "data" / "ingested").glob("*.dvc")):
        out = (yaml.safe_load(record.read_text()) or {}).get("outs", [{}])[0]
        folder = record.with_suffix("")
        info = json.loads((folder / INGEST_RECORD).read_text()) if (folder / INGEST_RECORD).is_file() else {}
        versions.append(DatasetVersion(str(out.get("md5", "?")), info.get("name", folder.name),
                                       folder.relative_to(root).as_posix(), out.get("nfiles"), out.get("size"),
                                       f"checked at ingest ({info.get('kind', '?')}, {info.get('samples', '?')} samples)",
                                       "workspace"))
    return versions


def format_versions(versions: list[DatasetVersion]) -> str:
    if not versions:
        return "no dataset versions yet: run the pipeline (generate) or `deocclude data ingest`"
    header = f"{'id (DVC hash)':<38} {'tag':<34} {'files':>6} {'size':>10}  {'validation':<36} recorded in"
    rows = [header]
    for version in versions:
        size = f"{version.bytes / 1e6:.1f} MB" if version.bytes is not None else "?"
        rows.append(f"{version.id:<38} {version.tag or version.path:<34} {version.files or '?':>6} "
                    f"{size:>10}  {version.validation:<36} {version.where}")
    return "\n".join(rows)
