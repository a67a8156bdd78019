"""prefect.yaml's deployments on a real `prefect server start`: served, triggered through the API,
retraining when something changed and ending at once when nothing did."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.deployments import DeploymentConfigError, read_deployments
from tests.conftest import BIN, REPO, make_project, project_env
from tests.flows.conftest import WebhookInbox

RETRAIN = "deocclude-retrain/nightly-retrain"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: process exited {process.returncode}\n{log.read_text()[-3000:] if log else ''}")
        try:
            value = check()
            if value:
                return value
        except Exception:  # not up yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log.read_text()[-3000:] if log else ''}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    state = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(state / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = state / "server.log"
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 180, "prefect server", server, log)
        yield url
    finally:
        stop(server)


def all_logs(client) -> str:
    lines, offset = [], 0
    while True:
        page = client.read_logs(limit=200, offset=offset)
        lines += [log.message for log in page]
        if len(page) < 200:
            return "\n".join(lines)
        offset += 200


def test_the_served_deployment_retrains_when_params_change_and_ends_fast_when_nothing_did(tmp_path, prefect_server,
                                                                                           webhook_url):
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = make_project(tmp_path / "project")
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    env = project_env(root, PREFECT_API_URL=prefect_server)
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([str(BIN / "deocclude"), "--params", str(root / "params.yaml"), "deployments", "serve"],
                             cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            Webhook(url=webhook_url).save("team-channel", overwrite=True)
            deployment = wait_for(lambda: client.read_deployment_by_name(RETRAIN), 120, "served deployment", serve, log)
            assert [schedule.schedule.cron for schedule in deployment.schedules] == ["0 2 * * *"]
            assert deployment.parameters["project_dir"] == str(root.resolve())

            parameters = {"overrides": {"inpainter.epochs": 2}, "notify_block": "webhook/team-channel"}
            first = run_deployment(RETRAIN, parameters=parameters, timeout=900)
            assert first.state.is_completed(), f"{first.state}\n{log.read_text()[-3000:]}"
            logs = all_logs(client)
            assert "retraining: stale stages" in logs and "params.yaml: set inpainter.epochs" in logs
            assert "train_inpainter epoch 2/2" in logs   # a stage's own output, in Prefect's log store
            assert "stage register: ran" in logs
            assert yaml.safe_load((root / "params.yaml").read_text())["inpainter"]["epochs"] == 2

            artifact = client.read_latest_artifacts()
            markdown = next(a.data for a in artifact if a.key == "deocclude-run")
            assert "Promotion decision: **champion**: version 1" in markdown
            assert "| ours: predicted mask |" in markdown and "| Telea: predicted mask |" in markdown
            assert "/#/experiments/" in markdown and "](file://" in markdown and "![" not in markdown
            assert "Data drift: " in markdown   # the drift stage's verdict (here: no reference version yet)
            assert [event["event"] for event in WebhookInbox.received] == ["promoted"]
            assert WebhookInbox.received[0]["version"] == "1"

            started = time.monotonic()
            second = run_deployment(RETRAIN, parameters=parameters, timeout=300)
            elapsed = time.monotonic() - started
            assert second.state.is_completed(), str(second.state)
            # Filtered by the run: the first run alone may fill a page. Its logs reach the server in
            # batches, possibly after the run has completed.
            only_second = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[second.id]))
            flow_run_logs = lambda: [log.message for log in client.read_logs(log_filter=only_second, limit=200)]  # noqa: E731
            second_logs = wait_for(lambda: (lines := flow_run_logs()) and any(
                line.startswith("no retraining: nothing changed") for line in lines) and lines, 60,
                "the second run's log line 'no retraining: nothing changed'")
            assert not any(line.startswith("stage ") for line in second_logs)
            assert elapsed < 120  # the no-change path's own budget is measured in benchmarks/
            assert len(WebhookInbox.received) == 1   # nothing promoted, nothing to announce
    finally:
        stop(serve, signal.SIGINT)

    # The team's way: the same prefect.yaml deployed to a process work pool, a worker running it.
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    prefect = [str(BIN / "prefect"), "--no-prompt"]
    team_env = {**env, "DEOCCLUDE_PROJECT_DIR": str(root)}
    for command in (["work-pool", "create", "deocclude", "--type", "process"], ["deploy", "--all"],
                    ["deployment", "run", "deocclude-retrain/retrain-on-demand"]):
        done = subprocess.run([*prefect, *command], cwd=root, env=team_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    worker = subprocess.run([*prefect, "worker", "start", "--pool", "deocclude", "--run-once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "no retraining: nothing changed" in worker.stdout + worker.stderr, worker.stdout[-3000:]
    assert "Finished in state Completed()" in worker.stdout + worker.stderr


def test_prefect_yaml_defines_a_nightly_retraining_and_refuses_an_unknown_flow(tmp_path):
    specs = {spec.name: spec for spec in read_deployments(REPO / "prefect.yaml")}
    assert specs["nightly-retrain"].flow.name == "deocclude-retrain"
    assert [schedule.cron for schedule in specs["nightly-retrain"].schedules] == ["0 2 * * *"]
    assert specs["pipeline"].flow.name == "deocclude-pipeline" and not specs["pipeline"].schedules
    broken = yaml.safe_load((REPO / "prefect.yaml").read_text())
    broken["deployments"][0]["entrypoint"] = "flows/retrain.py:no_such_flow"
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(DeploymentConfigError, match=r"prefect.yaml: deployment 'nightly-retrain' has entrypoint"):
        read_deployments(tmp_path / "prefect.yaml")
