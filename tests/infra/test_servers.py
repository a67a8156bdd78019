"""The team set-up end to end, without Docker: infra/servers.py starts the compose file's services as
processes (a real Postgres, moto's S3 server standing in for MinIO, an MLflow server on Postgres
with artifacts proxied to S3, a Prefect server on Postgres). The quick pipeline then runs against
them as a teammate's would, with nothing but MLFLOW_TRACKING_URI and PREFECT_API_URL set, and the
champion, its artifacts and the flow run are found on the servers. No secret reaches a log, a
param or a tag."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, make_project, project_env

SERVERS = REPO / "infra" / "servers.py"
pytestmark = pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("initdb") is None,
                                reason="Postgres is not installed: sh infra/install_postgres.sh (make install runs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Stack:
    state: Path
    mlflow_uri: str
    prefect_api: str
    s3_url: str
    postgres_port: int
    credentials: dict[str, str]

    @property
    def secrets(self) -> list[str]:
        return [self.credentials[name] for name in ("POSTGRES_PASSWORD", "OPTUNA_DB_PASSWORD", "S3_SECRET_KEY")]

    def prefect(self, path: str, body: dict) -> list[dict]:
        request = urllib.request.Request(f"{self.prefect_api}/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def prefect_logs(self, body: dict | None = None) -> list[dict]:
        logs: list[dict] = []
        while page := self.prefect("logs/filter", {**(body or {}), "limit": 200, "offset": len(logs)}):
            logs += page
        return logs


@pytest.fixture(scope="module")
def stack():
    # Not pytest's tmp_path: its parent is private to root, and Postgres runs as the postgres user.
    state = Path(tempfile.mkdtemp(prefix="deocclude-stack-"))
    state.chmod(0o755)
    credentials = {"POSTGRES_USER": "deocclude", "POSTGRES_PASSWORD": f"pg-{secrets.token_hex(12)}",
                   "OPTUNA_DB_PASSWORD": f"optuna-{secrets.token_hex(12)}",
                   "S3_ACCESS_KEY": "deocclude-tests", "S3_SECRET_KEY": f"s3-{secrets.token_hex(16)}",
                   "S3_BUCKET": "deocclude-tests"}
    ports = {"mlflow": free_port(), "prefect": free_port(), "s3": free_port(), "postgres": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    try:
        started = subprocess.run([sys.executable, str(SERVERS), "start", "--state-dir", str(state),
                                  *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port)))],
                                 env={**env, **credentials}, capture_output=True, text=True, timeout=420)
        assert started.returncode == 0, started.stdout + started.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
                       if line.startswith("export "))
        stack = Stack(state, exports["MLFLOW_TRACKING_URI"], exports["PREFECT_API_URL"],
                      f"http://127.0.0.1:{ports['s3']}", ports["postgres"], credentials)
        assert not any(secret in started.stdout + started.stderr for secret in stack.secrets)
        yield stack
    finally:
        if (state / "pids.json").is_file():
            subprocess.run([sys.executable, str(SERVERS), "stop", "--state-dir", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@dataclass(frozen=True)
class TeammateRun:
    root: Path
    env: dict[str, str]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def teammate_run(stack, tmp_path_factory) -> TeammateRun:
    """`deocclude run` in a teammate's checkout: the two URLs set, no credential of any kind."""
    root = make_project(tmp_path_factory.mktemp("teammate") / "project")
    env = project_env(root, MLFLOW_TRACKING_URI=stack.mlflow_uri, PREFECT_API_URL=stack.prefect_api)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_") and k not in stack.credentials
           and k != "MLFLOW_S3_ENDPOINT_URL"}
    result = subprocess.run([str(BIN / "deocclude"), "run"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return TeammateRun(root, env, result)


def test_the_pipeline_runs_against_the_team_servers(stack, teammate_run):
    assert f"Tracking store: {stack.mlflow_uri}" in teammate_run.result.stdout
    root = teammate_run.root
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists() and not (root / "mlruns").exists()


def test_the_champion_is_registered_on_the_server_and_its_artifacts_are_in_the_bucket(stack, teammate_run):
    import boto3
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    champion = client.get_model_version_by_alias("deocclusion", "champion")
    assert champion.version == "1" and champion.tags["params_hash"]
    assert {m.name for m in client.search_registered_models()} == {"deocclusion", "occluder-segmenter", "face-inpainter"}

    s3 = boto3.client("s3", endpoint_url=stack.s3_url, region_name="us-east-1",
                      aws_access_key_id=stack.credentials["S3_ACCESS_KEY"],
                      aws_secret_access_key=stack.credentials["S3_SECRET_KEY"])
    keys = {item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.credentials["S3_BUCKET"])
            for item in page.get("Contents", [])}
    model_id = champion.source.removeprefix("models:/")
    assert any(key.startswith("mlflow/") and key.endswith(f"/models/{model_id}/artifacts/MLmodel") for key in keys), \
        f"the champion's model {model_id} is not in the bucket; keys: {sorted(keys)[:20]}"
    experiment = client.get_run(champion.run_id).info.experiment_id
    assert any(key.startswith(f"mlflow/{experiment}/{champion.run_id}/artifacts/") for key in keys)


def test_the_flow_run_is_on_the_prefect_server(stack, teammate_run):
    runs = stack.prefect("flow_runs/filter", {"flows": {"name": {"any_": ["deocclude-pipeline"]}}})
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    logs = stack.prefect_logs({"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert any("stage register: ran" in log["message"] for log in logs)


def test_optuna_workers_share_a_study_through_the_optuna_role(stack):
    """The Scaling-out set-up: postgres-init.sh's role and database hold a study two workers see."""
    import optuna

    storage = f"postgresql+psycopg://optuna:{stack.credentials['OPTUNA_DB_PASSWORD']}@127.0.0.1:{stack.postgres_port}/optuna"
    first = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    first.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    second = optuna.load_study(study_name="shared", storage=storage)
    second.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert len(first.trials) == 3
    with pytest.raises(Exception, match="password authentication failed"):
        optuna.load_study(study_name="shared", storage=storage.replace(stack.credentials["OPTUNA_DB_PASSWORD"], "wrong"))


def test_no_secret_in_the_logs_params_or_tags(stack, teammate_run):
    from mlflow import MlflowClient

    said = {"pipeline stdout": teammate_run.result.stdout, "pipeline stderr": teammate_run.result.stderr}
    said.update({str(path): path.read_text(errors="replace") for path in stack.state.rglob("*.log")})
    said.update({str(path): path.read_text(errors="replace") for path in teammate_run.root.rglob("*")
                 if path.is_file() and path.suffix in (".json", ".yaml", ".lock", ".md", ".csv", ".log", ".txt", ".html")})
    client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            said[f"run {run.info.run_name} params and tags"] = json.dumps([run.data.params, run.data.tags])
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            said[f"{model.name} v{version.version}"] = json.dumps([version.tags, version.description])
    flow_runs = stack.prefect("flow_runs/filter", {})
    said["prefect flow runs"] = json.dumps(flow_runs)
    said["prefect logs"] = json.dumps(stack.prefect_logs())
    assert len(said) > 10 and any("postgres" in name for name in said)
    leaks = [where for where, text in said.items() for secret in stack.secrets if secret in text]
    assert not leaks, f"a secret appears in: {leaks}"
    assert all(secret not in json.dumps(teammate_run.env) for secret in stack.secrets)
