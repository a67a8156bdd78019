"""The flow's stage tasks on a real DVC project of small scripts: retries only for transient
failures, timeouts that stop a hung stage, and nothing after a stage that failed for good."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect import flow

from flows.changes import pending_changes
from flows.pipeline_flow import StageFailed, reproduce_stages
from tests.conftest import BIN
from tests.flows.conftest import WebhookInbox

STAGE_SCRIPT = """
import sys, pathlib
name, behaviour = sys.argv[1], sys.argv[2]
attempts = pathlib.Path(f"attempts/{name}")
attempts.parent.mkdir(exist_ok=True)
count = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(count))
if behaviour == "transient-once" and count == 1:
    print("requests.exceptions.ConnectionError: HTTPConnectionPool(host='tracking', port=5000): Max retries exceeded")
    sys.exit(1)
if behaviour == "broken":
    print("ValueError: the data are bad")
    sys.exit(1)
if behaviour == "hang":
    import time; time.sleep(120)
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path(f"out/{name}.txt").write_text(open("params.yaml").read())
"""


def dvc_project(root: Path, stages: dict[str, str]) -> Path:
    root.mkdir()
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "params.yaml").write_text("rate: 1\n")
    (root / "data").mkdir()
    (root / "data" / "faces.txt").write_text("v1\n")
    (root / "pipeline").mkdir()
    (root / "pipeline" / "model.py").write_text("WIDTH = 8\n")
    dvc_yaml = {"stages": {name: {"cmd": f"{sys.executable} stage.py {name} {behaviour}",
                                  "deps": ["stage.py", "data/faces.txt", "pipeline/model.py"],
                                  "params": ["rate"], "outs": [f"out/{name}.txt"]}
                           for name, behaviour in stages.items()}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def attempts(root: Path, stage: str) -> int:
    path = root / "attempts" / stage
    return int(path.read_text()) if path.exists() else 0


@flow(name="stage-tasks-under-test")
def run_stages(project_dir: str, stages: list[str], timeout_minutes: dict[str, float] | None = None) -> list[str]:
    outcomes = reproduce_stages(Path(project_dir), stages, None, timeout_minutes=timeout_minutes)
    return [stage for stage, outcome in outcomes.items() if outcome.ran]


def test_a_transient_failure_is_retried_and_a_real_one_stops_the_flow_before_later_stages(tmp_path):
    root = dvc_project(tmp_path / "project", {"flaky": "transient-once", "broken": "broken", "after": "ok"})
    with pytest.raises(StageFailed) as failure:
        run_stages(str(root), ["flaky", "broken", "after"])
    assert failure.value.stage == "broken"
    assert str(failure.value).startswith("stage broken failed (exit ") and "the data are bad" in str(failure.value)
    assert attempts(root, "flaky") == 2           # the connection error was retried, and then it passed
    assert (root / "out" / "flaky.txt").is_file()
    assert attempts(root, "broken") == 1          # a bug fails the same way again: not retried
    assert attempts(root, "after") == 0 and not (root / "out" / "after.txt").exists()


def test_a_stage_past_its_timeout_is_stopped_and_named(tmp_path):
    root = dvc_project(tmp_path / "project", {"hang": "hang", "after": "ok"})
    started = time.monotonic()
    with pytest.raises(StageFailed, match=r"stage hang timed out after 0.05 min"):
        run_stages(str(root), ["hang", "after"], timeout_minutes={"hang": 0.05})
    assert time.monotonic() - started < 60
    assert attempts(root, "hang") == 1 and attempts(root, "after") == 0


def test_changes_name_the_dataset_params_code_and_outputs_that_differ(tmp_path):
    root = dvc_project(tmp_path / "project", {"train": "ok"})
    assert run_stages(str(root), ["train"]) == ["train"]
    unchanged = pending_changes(root)
    assert not unchanged.any and "nothing changed" in unchanged.summary()
    assert run_stages(str(root), ["train"]) == []  # up to date: DVC skips it

    (root / "params.yaml").write_text("rate: 2\n")
    (root / "data" / "faces.txt").write_text("v2\n")
    (root / "pipeline" / "model.py").write_text("WIDTH = 16\n")
    (root / "out" / "train.txt").unlink()
    changes = pending_changes(root)
    assert changes.stale_stages == ("train",)
    assert changes.params == ("rate",) and changes.data == ("data/faces.txt",) and changes.code == ("pipeline/model.py",)
    assert changes.outputs == ("out/train.txt (deleted)",)
    assert "params: rate" in changes.summary() and "dataset: data/faces.txt" in changes.summary()


def test_the_registry_moving_counts_as_a_change(tmp_path):
    root = dvc_project(tmp_path / "project", {"train": "ok"})
    run_stages(str(root), ["train"])
    registration = root / "registration.json"
    registration.write_text('{"tracking_uri": "sqlite:///old.db"}')
    assert not pending_changes(root, registration, "sqlite:///old.db").any
    moved = pending_changes(root, registration, "http://mlflow.team:5000")
    assert moved.any and moved.registry_moved and not moved.stale_stages


def test_a_pipeline_that_fails_names_the_stage_notifies_and_runs_nothing_after_it(tmp_path, webhook_url):
    from prefect.blocks.webhook import Webhook

    from flows.pipeline_flow import deocclude_pipeline
    from tests.conftest import make_project, project_env

    root = make_project(tmp_path / "project")
    (root / "pipeline" / "stages" / "generate.py").write_text("raise RuntimeError('generator broken on purpose')\n")
    Webhook(url=webhook_url).save("failures", overwrite=True)
    saved = dict(os.environ)
    os.environ.update(project_env(root))  # the stages' subprocesses inherit the flow's environment
    try:
        with pytest.raises(StageFailed, match=r"^stage generate failed .*generator broken on purpose"):
            deocclude_pipeline(project_dir=str(root), notify_block="webhook/failures")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert [event["event"] for event in WebhookInbox.received] == ["failed"]
    assert "stage generate failed" in WebhookInbox.received[0]["error"]
    assert (root / "params.resolved.yaml").is_file() and not (root / "reports").exists()
    assert not (root / "data" / "dataset").exists()


def test_a_notification_block_that_cannot_be_loaded_does_not_fail_the_run():
    from flows.notify import notify

    @flow
    def announce() -> bool:
        return notify("webhook/no-such-block", "promoted", {"version": "3"})

    assert announce() is False
