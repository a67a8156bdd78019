"""The team set-up: the pipeline against a real MLflow tracking server started by infra/servers.py."""

import socket
import subprocess
import sys

import pytest

from tests.conftest import BIN, REPO, make_project, project_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    state = tmp_path / "state"
    started = subprocess.run([sys.executable, str(REPO / "infra/servers.py"), "start", "--only", "mlflow",
                              "--mlflow-port", str(free_port()), "--state-dir", str(state)],
                             capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
                   if line.startswith("export "))
    yield exports["MLFLOW_TRACKING_URI"]
    subprocess.run([sys.executable, str(REPO / "infra/servers.py"), "stop", "--state-dir", str(state)], timeout=60)


def test_quick_pipeline_registers_its_champion_on_the_tracking_server(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    root = make_project(tmp_path / "project")
    env = project_env(root, MLFLOW_TRACKING_URI=mlflow_server)
    result = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias("deocclusion", "champion")
    assert champion.version == "1" and champion.tags["params_hash"]
    assert {m.name for m in client.search_registered_models()} == {"deocclusion", "occluder-segmenter", "face-inpainter"}
