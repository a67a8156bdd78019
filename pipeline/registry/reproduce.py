"""`deocclude reproduce`: what a registered version recorded (params, data version, metrics), put
back in the project, and the rerun's results checked against it."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

# Wall-clock measurements: they depend on the machine's load, not on what the pipeline computed.
TIMING_SECTIONS = ("latency",)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class RecordedVersion:
    uri: str
    version: str
    run_id: str
    git_commit: str
    data_version: str
    metrics: dict[str, Any]     # the evaluation's metrics.json as registered


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def restore_params(model_uri: str, params_path: Path) -> RecordedVersion:
    """Write the params.yaml the version was built from over `params_path`; return what it recorded."""
    match = MODEL_URI.match(model_uri)
    if not match:
        raise LookupError(f"{model_uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
    client = MlflowClient()
    try:
        record = (client.get_model_version(match["name"], match["version"]) if match["version"]
                  else client.get_model_version_by_alias(match["name"], match["alias"]))
    except MlflowException:
        raise LookupError(f"{model_uri}: not found in the registry") from None
    run_id = record.tags.get("register_run_id") or record.run_id
    with tempfile.TemporaryDirectory(prefix="reproduce-") as workdir:
        try:
            params = Path(client.download_artifacts(run_id, "params/params.yaml", workdir))
            metrics = json.loads(Path(client.download_artifacts(run_id, "evaluation/metrics.json", workdir)).read_text())
        except (MlflowException, OSError):
            raise LookupError(f"{model_uri}: its register run {run_id} has no params/params.yaml or "
                              "evaluation/metrics.json artifact (registered before reproduction was recorded)") from None
        shutil.copyfile(params, params_path)
    return RecordedVersion(model_uri, str(record.version), run_id, record.tags.get("git_commit", "unknown"),
                           record.tags.get("data_version", "unknown"), metrics)


@dataclass(frozen=True)
class ReproductionReport:
    identical: bool
    text: str


def check_reproduction(recorded: RecordedVersion, metrics: dict[str, Any], data_version: str,
                       git_commit: str) -> ReproductionReport:
    """Every recorded metric and the data version must come out exactly the same."""
    lines = []
    if git_commit.removesuffix("-dirty") != recorded.git_commit.removesuffix("-dirty"):
        lines.append(f"note: code at {git_commit}, the version was built at {recorded.git_commit}")
    same_data = data_version == recorded.data_version
    lines.append(f"data version: {data_version} ({'same' if same_data else 'DIFFERS from ' + recorded.data_version})")
    timings = lambda flat: {k: v for k, v in flat.items() if k.split(".")[0] not in TIMING_SECTIONS}  # noqa: E731
    before, after = timings(_flat(recorded.metrics)), timings(_flat(metrics))
    differing = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    for key in differing:
        lines.append(f"  {key}: recorded {before.get(key)!r}, now {after.get(key)!r}")
    identical = same_data and not differing
    lines.append(f"{recorded.uri}: " + (f"reproduced exactly ({len(before)} metrics identical; timings "
                                        f"({', '.join(TIMING_SECTIONS)}) not compared)" if identical
                                        else f"NOT reproduced: {len(differing)} of {len(before)} metrics differ"))
    return ReproductionReport(identical, "\n".join(lines))
