"""The whole pipeline on a tiny config: Prefect flow over DVC stages into a real MLflow registry."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import BIN, REPO, deocclude, make_project, project_env, tiny_params, write_params


def dvc(root, *args):
    return subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          check=True, timeout=900)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    result = deocclude(root, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result.stdout + result.stderr


def mlflow_client(root):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", registry_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_flow_registers_a_champion_that_beats_the_occluded_input(project):
    root, stdout = project
    assert "Champion: models:/deocclusion@champion is version 1" in stdout
    assert f"Evaluation report: {root / 'reports/eval/report.html'}" in stdout
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert metrics["end_to_end"]["psnr_masked"] > metrics["occluded_input"]["psnr_masked"]
    client = mlflow_client(root)
    champion = client.get_model_version_by_alias("deocclusion", "champion")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    data_md5 = next(o["md5"] for o in lock["stages"]["generate"]["outs"] if o["path"] == "data/dataset")
    for name in ("deocclusion", "occluder-segmenter", "face-inpainter"):
        version = client.get_model_version(name, "1")
        assert version.tags["data_version"] == data_md5 and version.tags["data_tag"] == "synthetic-60x32px-seed42"
        assert len(version.tags["git_commit"]) >= 40 and len(version.tags["params_hash"]) == 64
    assert float(champion.tags["metric.end_to_end.psnr_masked"]) == pytest.approx(metrics["end_to_end"]["psnr_masked"])
    segmenter_tags = client.get_model_version("occluder-segmenter", "1").tags
    assert (segmenter_tags["threshold"], segmenter_tags["opening_kernel"], segmenter_tags["test_time_flip"]) == \
        ("0.5", "0", "true")   # how its logits become the pipeline's masks
    # Lineage by content: each version names the run whose checkpoint_md5 tag is the file's DVC hash.
    runs = {run.info.run_name: run for run in client.search_runs([deocclude_experiment_id(client)])}
    outs = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    assert segmenter_tags["training_run_id"] == runs["train_segmenter"].info.run_id
    assert runs["train_segmenter"].data.tags["checkpoint_md5.segmenter"] == outs["models/segmenter.pt"]
    assert client.get_model_version("face-inpainter", "1").tags["training_run_id"] == runs["finetune"].info.run_id
    assert runs["finetune"].data.tags["checkpoint_md5.inpainter_finetuned"] == outs["models/inpainter_finetuned.pt"]


def test_the_gate_scores_a_model_on_the_photograph_set_as_evaluate_reports_it(project):
    """register re-scores a champion's photograph floors with its own code: for the model evaluate
    scored, it must give evaluate's figures."""
    from pipeline.config import load_config
    from pipeline.deocclusion import Deoccluder
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.stages.evaluate import photograph_split
    from pipeline.stages.register import photograph_scores

    root, _ = project
    cfg = load_config(root / "params.yaml")
    deoccluder = Deoccluder.from_settings(*load_checkpoint(root / "models/segmenter.pt"),
                                          *load_checkpoint(root / "models/inpainter_finetuned.pt"))
    scores = photograph_scores(deoccluder, photograph_split(cfg.data.resolution, cfg.seed), "end_to_end",
                               ["occluded_input", "telea"], cfg.evaluation.telea_radius)
    reported = json.loads((root / "reports/eval/metrics.json").read_text())["photographs"]
    assert scores["segmentation"]["iou"] == pytest.approx(reported["segmentation"]["iou"], abs=1e-5)
    for method in ("end_to_end", "occluded_input", "telea"):
        for metric, value in scores[method].items():
            assert value == pytest.approx(reported[method][metric], abs=1e-4), (method, metric)


def deocclude_experiment_id(client):
    return client.get_experiment_by_name("deocclude").experiment_id


def test_training_runs_log_params_epoch_metrics_checkpoint_and_samples(project):
    root, _ = project
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deocclude")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert {"train_segmenter", "train_inpainter", "finetune", "evaluate", "register"} <= set(runs)
    segmenter_run = runs["train_segmenter"]
    assert segmenter_run.data.params["segmenter.arch"] == "soclnet" and segmenter_run.data.params["profile"] == "quick"
    history = client.get_metric_history(segmenter_run.info.run_id, "val/loss")
    assert len(history) == tiny_params()["segmenter"]["epochs"]
    artifacts = {a.path for a in client.list_artifacts(segmenter_run.info.run_id)}
    assert {"segmenter.pt", "segmenter_samples.png", "segmenter_history.csv"} <= artifacts
    inpainter_run = runs["train_inpainter"]
    assert inpainter_run.data.params["perceptual.backbone"] == "vgg19-random"
    assert "inpainter.pt" in {a.path for a in client.list_artifacts(inpainter_run.info.run_id)}
    assert client.get_metric_history(inpainter_run.info.run_id, "train/adversarial")


def test_second_run_skips_every_stage_though_python_wrote_bytecode(project):
    root, _ = project
    assert list((root / "pipeline").rglob("__pycache__/*.pyc")), "the stages ran with bytecode writing on"
    result = deocclude(root, "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stages run: none" in result.stdout
    assert "up to date" in dvc(root, "status").stdout


def test_a_retrained_unchanged_model_keeps_its_hash_so_the_stages_after_it_stay_cached(project, tmp_path):
    """The checkpoint holds nothing run-specific: retraining with the same data, code and params on the same
    machine writes the same bytes, DVC records the same hash and finetune, evaluate and register stay cached."""
    root = tmp_path / "copy"
    shutil.copytree(project[0], root, symlinks=True)

    def segmenter_md5():
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        return next(o["md5"] for o in lock["stages"]["train_segmenter"]["outs"] if o["path"] == "models/segmenter.pt")

    before = segmenter_md5()
    dvc(root, "repro", "--force", "--single-item", "train_segmenter")
    assert segmenter_md5() == before
    assert "up to date" in dvc(root, "status").stdout


def test_outputs_restored_from_the_run_cache_still_register_in_this_tracking_store(project, tmp_path):
    """A rerun with the outputs deleted and another tracking store: DVC restores the stages whose inputs
    ran before from its run cache, but never `register`, whose version lives in the store."""
    root = tmp_path / "copy"
    shutil.copytree(project[0], root, symlinks=True)
    shutil.rmtree(root / "models")
    shutil.rmtree(root / "reports")
    store = f"sqlite:///{tmp_path / 'other.db'}"
    result = deocclude(root, "run", env=project_env(root, MLFLOW_TRACKING_URI=store))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "stage train_segmenter: up to date, skipped" in output and (root / "models" / "segmenter.pt").is_file()
    assert "stage register: ran" in output
    registration = json.loads((root / "reports" / "registration.json").read_text())
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert client.get_run(registration["run_id"]).info.run_name == "register"
    assert client.get_model_version("deocclusion", "1").run_id == registration["run_id"]


def test_one_execution_is_one_parent_run_with_the_stage_runs_and_the_dataset(project):
    root, _ = project
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deocclude")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parent = next(run for run in runs if run.info.run_name == "pipeline")
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {run.info.run_name for run in children} == {"drift", "train_segmenter", "train_inpainter", "finetune",
                                                       "evaluate", "register"}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    data_md5 = next(o["md5"] for o in lock["stages"]["generate"]["outs"] if o["path"] == "data/dataset")
    datasets = parent.inputs.dataset_inputs
    assert [d.dataset.digest for d in datasets] == [data_md5]
    assert parent.data.tags["data_version"] == data_md5 and parent.info.status == "FINISHED"
    assert {run.data.tags.get("data_tag") for run in [parent, *children]} == {"synthetic-60x32px-seed42"}
    assert parent.data.metrics["end_to_end.psnr_masked"] == pytest.approx(
        json.loads((root / "reports/eval/metrics.json").read_text())["end_to_end"]["psnr_masked"])
    training = next(run for run in children if run.info.run_name == "train_segmenter")
    assert [d.dataset.digest for d in training.inputs.dataset_inputs] == [data_md5]


def test_a_fresh_clone_registers_a_clean_commit(project):
    root, _ = project
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    version = mlflow_client(root).get_model_version("deocclusion", "1")
    assert version.tags["git_commit"] == head  # the pipeline rewrote dvc.lock; that is not a code change


def test_the_console_shows_stages_and_summary_without_tracebacks(project):
    _, stdout_and_stderr = project
    assert "Traceback" not in stdout_and_stderr and "database is locked" not in stdout_and_stderr
    for stage in ("generate", "train_segmenter", "register"):
        assert stdout_and_stderr.count(f"stage {stage}: ran") == 1
    assert "Finished in state" not in stdout_and_stderr and "💡" not in stdout_and_stderr


def test_evaluation_report_and_metrics_are_dvc_outputs(project):
    root, _ = project
    report = (root / "reports/eval/report.md").read_text()
    assert "OpenCV Telea" in report and "ground-truth mask" in report and "samples.png" in report
    shown = json.loads(dvc(root, "metrics", "show", "--json").stdout)
    assert any("reports/eval/metrics.json" in json.dumps(v) for v in shown.values())


def test_a_real_run_writes_the_html_report_per_image_scores_and_numeric_bin_plots(project, tmp_path):
    from tests.evaluation.browser import CHROMIUM, check_page

    root, _ = project
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = {out["path"] for out in lock["stages"]["evaluate"]["outs"]}
    assert {"reports/eval/report.html", "reports/eval/per_image.csv", "reports/eval/gradcam"} <= outs
    plots = json.loads(dvc(root, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    values = plots["data"]["psnr_by_mask_ratio"][0]["content"]["data"]["values"]
    assert sorted({float(v["mask_ratio_percent"]) for v in values}) == [5.5, 15.0, 25.0, 35.0, 45.0, 55.0]
    if CHROMIUM:
        check = check_page(root / "reports/eval/report.html", tmp_path)
        assert check.problems == [] and check.images >= 2 and check.charts >= 6


def test_predict_any_size_keeps_known_pixels(project, tmp_path):
    root, _ = project
    source = np.asarray(Image.open(next((root / "data/dataset/images").iterdir())).resize((45, 70)))
    Image.fromarray(source).save(tmp_path / "face.png")
    result = deocclude(root, "predict", str(tmp_path / "face.png"), "-o", str(tmp_path / "out.png"),
                       "--mask-out", str(tmp_path / "mask.png"))
    assert result.returncode == 0, result.stderr[-3000:]
    output, mask = np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(tmp_path / "mask.png"))
    assert output.shape == source.shape and mask.shape == source.shape[:2]
    np.testing.assert_array_equal(output[mask == 0], source[mask == 0])


@pytest.mark.parametrize("make_bad, problem", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_bytes(b""), "file is empty"),
    (lambda p: p.write_bytes(b"this is not an image"), "not a recognised image format"),
    (lambda p: (Image.new("RGB", (64, 64), "red").save(p), p.write_bytes(p.read_bytes()[:60])), "truncated"),
])
def test_predict_on_a_bad_file_exits_2_and_writes_nothing(project, tmp_path, make_bad, problem):
    root, _ = project
    bad = tmp_path / "bad.png"
    make_bad(bad)
    result = deocclude(root, "predict", str(bad), "-o", str(tmp_path / "out.png"))
    assert result.returncode == 2
    assert str(bad) in result.stderr and problem in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_changing_a_training_param_reruns_only_downstream_stages(project):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["optimizer"]["lr"] = params["finetune"]["optimizer"]["lr"] * 3  # not 2: the README test sets 0.0004 on a copy of this project
    params["finetune"]["keep_if_no_gain"] = False   # the fine-tuned weights go downstream even if they gain nothing
    write_params(root, params)
    assert set(json.loads(dvc(root, "status", "--json").stdout)) == {"resolve_params"}
    dvc(root, "repro", "resolve_params")
    stale = json.loads(dvc(root, "status", "--json").stdout)
    assert set(stale) == {"finetune"}  # downstream stages go stale once finetune's output changes
    output = dvc(root, "repro").stdout
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"finetune", "evaluate", "register"}
    registration = json.loads((root / "reports/registration.json").read_text())
    assert registration["versions"]["deocclusion"] == "2"
    comparison = registration["gate"]["comparison"]  # v2 paired with v1, the champion, on the same test images
    test_samples = json.loads((root / "reports/eval/metrics.json").read_text())["test_samples"]
    assert registration["previous_champion"] == "1" and comparison["samples"] == test_samples
    expected = "champion" if comparison["lower"] > 0 else "challenger"
    assert registration["alias"] == expected
    assert "up to date" in dvc(root, "status").stdout


def test_the_rerun_evaluation_shows_the_champion_beside_the_candidate(project):
    """After the param change above, evaluate ran again with version 1 as champion."""
    root, _ = project
    page = (root / "reports/eval/report.html").read_text()
    assert "champion v1" in page and "Tested on this same data version." in page


def test_reproduce_restores_a_versions_params_and_gives_identical_metrics(project, tmp_path):
    """`deocclude reproduce` of version 1 once the user has moved on: the restored params rerun every
    stage from scratch into exactly the recorded metrics."""
    root = copy_project(project[0], tmp_path / "clone")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["optimizer"]["lr"] = 0.0005
    write_params(root, params)
    result = deocclude(root, "reproduce", "models:/deocclusion/1", timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert yaml.safe_load((root / "params.yaml").read_text()) == tiny_params()
    assert "models:/deocclusion/1: reproduced exactly" in result.stdout
    assert "data version: " in result.stdout and "(same)" in result.stdout
    output = (result.stdout + result.stderr).splitlines()
    ran = {line.split("'")[1] for line in output if line.startswith("Running stage")}   # --force: none restored
    assert {"generate", "train_segmenter", "train_inpainter", "finetune", "evaluate"} <= ran


def test_predict_with_an_unknown_model_names_it(project, tmp_path):
    root, _ = project
    source = next((root / "data/dataset/images").iterdir())
    result = deocclude(root, "predict", str(source), "-o", str(tmp_path / "out.png"), "--model", "models:/deocclusion/99")
    assert result.returncode == 1
    assert "models:/deocclusion/99: cannot be loaded" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_flow_registers_into_a_newly_chosen_store_without_retraining(project, tmp_path):
    from mlflow import MlflowClient

    root, _ = project
    shared_store = f"sqlite:///{tmp_path / 'shared.db'}"
    result = deocclude(root, "run", env=project_env(root, MLFLOW_TRACKING_URI=shared_store))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stages run: register" in result.stdout
    champion = MlflowClient(tracking_uri=shared_store, registry_uri=shared_store).get_model_version_by_alias(
        "deocclusion", "champion")
    assert str(champion.version) == "1"


def commit_results(root):
    """Commit dvc.lock and params.resolved.yaml after a run, as a user would."""
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "pipeline results"], cwd=root, check=True, capture_output=True)
    return root


def copy_project(root, target):
    """A clone of the project after its run, with its results committed."""
    shutil.copytree(root, target, symlinks=True)
    return commit_results(target)


def readme_block(heading):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(heading):]
    block = section[section.index("```bash") + len("```bash"):]
    return [line for line in block[:block.index("```")].strip().splitlines() if line.strip()]


def ran_stages(output):
    """Stages that ran, or that DVC restored from its run cache (the same inputs ran earlier)."""
    return {line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage") or "is cached - skipping run" in line}


def test_readme_commands_run_as_written_without_the_venv_on_path(project, tmp_path):
    root = tmp_path / "clone"
    shutil.copytree(project[0], root, symlinks=True)
    (root / ".venv").symlink_to(REPO / ".venv")
    installed = (REPO / ".venv" / ".installed").stat().st_mtime
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
        os.utime(root / name, (installed - 60, installed - 60))  # older than the stamp: make installs nothing here
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + "\n/.venv\n")
    commit_results(root)
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "PREFECT_HOME": str(root / ".prefect")}
    outputs = []
    for line in readme_block("### Change a parameter and rerun"):
        result = subprocess.run(["bash", "-c", line], cwd=root, env=shell, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        outputs.append(result.stdout + result.stderr)
    assert ran_stages(outputs[0]) == {"resolve_params", "finetune", "evaluate", "register"}
    assert "finetune.optimizer.lr" in outputs[1]

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluation"]["grid_samples"] = 2
    write_params(root, params)
    result = subprocess.run(["make", "repro"], cwd=root, env=shell, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran_stages(result.stdout) == {"resolve_params", "evaluate"}
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deocclude")
    parents = client.search_runs([experiment.experiment_id], "tags.orchestrator = 'dvc'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    evaluate_runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert [run.info.run_name for run in evaluate_runs] == ["evaluate"]


def test_under_a_profile_a_stage_reruns_only_when_a_value_it_reads_changes(project, tmp_path):
    root = copy_project(project[0], tmp_path / "clone")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profile"] = "paper"
    write_params(root, params)
    dvc(root, "repro", "resolve_params")
    dvc(root, "commit", "--force")  # take the outputs as the paper profile's, to watch what goes stale
    assert "up to date" in dvc(root, "status").stdout
    params["profiles"]["paper"]["finetune"]["optimizer"]["lr"] = 0.00002
    write_params(root, params)
    dvc(root, "repro", "resolve_params")
    assert set(json.loads(dvc(root, "status", "--json").stdout)) == {"finetune"}
    params["profiles"]["paper"]["segmenter"]["epochs"] = 19
    write_params(root, params)
    dvc(root, "repro", "resolve_params")
    assert set(json.loads(dvc(root, "status", "--json").stdout)) == {"finetune", "train_segmenter"}


def test_an_edited_source_file_makes_the_registered_commit_dirty(project, tmp_path):
    root = copy_project(project[0], tmp_path / "clone")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    register_stage = root / "pipeline/stages/register.py"
    register_stage.write_text(register_stage.read_text() + "\n# a local edit\n")
    result = deocclude(root, "repro")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran_stages(result.stdout) == {"register"}
    assert json.loads((root / "reports/registration.json").read_text())["git_commit"] == f"{head}-dirty"


def test_a_stage_refuses_params_that_dvc_has_not_resolved(tmp_path):
    write_params(tmp_path, tiny_params())
    assert deocclude(tmp_path, "resolve-params").returncode == 0
    write_params(tmp_path, tiny_params({"data": {"count": 61}}))
    result = deocclude(tmp_path, "generate")
    assert result.returncode == 1
    assert f"{tmp_path / 'params.resolved.yaml'}: out of date with params.yaml" in result.stderr
    assert not (tmp_path / "data").exists()
