"""A training stage on Lightning's DDP (two CPU processes, gloo), as on several GPUs or nodes: the
processes train together, and only the first records the stage in MLflow and writes its outputs."""

import subprocess

from pipeline.config import is_global_rank_zero
from tests.conftest import BIN, make_project, project_env


def test_the_first_process_is_known_before_the_trainer_exists():
    assert is_global_rank_zero({})
    assert is_global_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "0", "RANK": "0"})
    assert not is_global_rank_zero({"LOCAL_RANK": "1"})          # started by Lightning's launcher
    assert not is_global_rank_zero({"NODE_RANK": "1"})           # the command on the second node
    assert not is_global_rank_zero({"RANK": "3", "LOCAL_RANK": "0"})   # torchrun


def test_a_stage_on_two_ddp_processes_is_recorded_once(tmp_path):
    from mlflow import MlflowClient

    distributed = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 1, "precision": "32"}
    root = make_project(tmp_path / "project", {"data": {"count": 24}, "segmenter": {"epochs": 1, "trainer": distributed}})
    result = subprocess.run([str(BIN / "dvc"), "repro", "train_segmenter"], cwd=root, env=project_env(root),
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("segmenter soclnet trained") == 1, output[-3000:]
    assert (root / "models" / "segmenter.pt").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`mlflow.runName` = 'train_segmenter'")
    assert [run.info.status for run in runs] == ["FINISHED"]
    assert runs[0].data.params["segmenter.trainer.devices"] == "2"
    assert any("iou" in name for name in runs[0].data.metrics), runs[0].data.metrics
