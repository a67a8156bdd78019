"""Stage hpo on tiny configs: a killed study resumes to exactly its trials, two workers share one
study (sqlite, and Postgres where installed), the best weights reach training, random trials then
TPE, pruning stops a trial early, and the quick profile's empty search changes nothing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from pipeline.config import TUNED_PARAMS_FILE, ConfigError, load_config, optuna_storage_url
from pipeline.stages import generate, hpo, train_inpainter
from pipeline.stages.common import Paths
from pipeline.tuning.sampler import SAMPLER_ATTR, trial_seed
from pipeline.tuning.study import WORKER_ATTR, masked_url
from tests.conftest import BIN, project_env, tiny_params, write_params

# Two epochs of the tiny inpainter: a trial trains in about a second.
SEARCH = {"inpainter": {"epochs": 2},
          "hpo": {"random_trials": 2, "tpe_trials": 1, "terms": ["l1", "style", "adversarial"], "pruner": "none",
                  "heartbeat_seconds": 5}}
TERMS = ("l1", "style", "adversarial")


def merged(*overrides: dict) -> dict:
    from pipeline.config import merge_overrides

    result: dict = {}
    for override in overrides:
        result = merge_overrides(result, override)
    return result


@pytest.fixture(autouse=True)
def one_thread():
    """Trials in this process on one thread: on a shared 2-core machine torch's spinning threads make
    tiny epochs many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hpo-data")
    generate.run(load_config(write_params(root, tiny_params()), env={}))
    return root


def project(dataset_root: Path, root: Path, overrides: dict | None = None) -> Path:
    """A project directory: the tiny params with `overrides` and the shared dataset."""
    shutil.copytree(Paths(dataset_root).dataset, Paths(root).dataset)
    write_params(root, tiny_params(merged(SEARCH, overrides or {})))
    return root


def config(root: Path, **env: str):
    return load_config(root / "params.yaml", env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", **env})


def load_study(cfg, name: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name or hpo.study_name(cfg), storage=cfg.hpo.storage)


def start_worker(root: Path, log: Path, *args: str) -> subprocess.Popen:
    # One thread each: on a shared 2-core machine torch's spinning threads make tiny epochs far slower.
    return subprocess.Popen([str(BIN / "deocclude"), "--params", str(root / "params.yaml"), "hpo", *args], cwd=root,
                            env=project_env(root, OMP_NUM_THREADS="1"), stdout=log.open("w"), stderr=subprocess.STDOUT)


def study_created(db: Path, name: str) -> bool:
    """Whether the worker has created study `name` in `db`, read without writing: Optuna's own readers
    create the schema when it is missing and would race the worker creating it."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
    except sqlite3.OperationalError:    # no studies table yet, or locked while the worker writes it
        return False


def finish(worker: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    assert worker.wait(timeout=timeout) == 0, log.read_text()[-4000:]


def tuned_weights(root: Path) -> dict[str, float]:
    return yaml.safe_load((root / TUNED_PARAMS_FILE).read_text())["inpainter"]["loss_weights"]


def trial_runs(root: Path, study_name: str):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.optuna_study = '{study_name}'")
    return runs[runs["tags.mlflow.runName"].str.startswith("trial-")], runs[runs["tags.mlflow.runName"].str.startswith("hpo-")]


def test_a_killed_study_resumes_to_exactly_its_trials(dataset_root, tmp_path):
    root = project(dataset_root, tmp_path / "project", {"inpainter": {"epochs": 3}})
    cfg = config(root)
    name = hpo.study_name(cfg)
    log = tmp_path / "killed.log"
    worker = start_worker(root, log)
    deadline = time.monotonic() + 240
    while True:  # kill it while a second trial trains (its MLflow run open), after the first finished
        assert worker.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        if study_created(root / "optuna.db", name):
            trials = load_study(cfg).trials
            if (sum(trial.state == TrialState.COMPLETE for trial in trials) >= 1
                    and any(trial.state == TrialState.RUNNING and hpo.STUDY_RUN_ATTR in trial.user_attrs for trial in trials)):
                break
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    [killed] = load_study(cfg).get_trials(states=(TrialState.RUNNING,))
    killed_params = killed.params

    finish(start_worker(root, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    trials = load_study(cfg).trials
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3                                   # the requested 3, not 3 more
    assert trials[killed.number].state == TrialState.FAIL       # the killed one failed ...
    [retry] = [trial for trial in finished if trial.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed_params                        # ... and ran again with its values
    assert sorted({trial.number for trial in finished} | {killed.number}) == list(range(4))   # none lost
    assert {trial.system_attrs["failed_trial"] for trial in trials if "failed_trial" in trial.system_attrs} == {killed.number}
    runs, parents = trial_runs(root, name)
    assert len(parents) == 1 and set(runs["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    killed_run = runs[runs["tags.optuna_trial"] == str(killed.number)]
    assert killed_run["status"].tolist() == ["KILLED"]
    best = load_study(cfg).best_trial
    assert tuned_weights(root) == {term: round(best.params[term], 6) for term in TERMS}


def test_two_workers_share_one_study_on_sqlite(dataset_root, tmp_path):
    root = project(dataset_root, tmp_path / "project", {"hpo": {"random_trials": 3}})
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    two_workers_share_one_study(root, storage, tmp_path)


def two_workers_share_one_study(root: Path, storage: str, tmp_path: Path) -> None:
    """4 trials (3 random, 1 TPE) by two workers started together on `storage`: each trial number
    0..3 runs exactly once, with distinct values, in one of the two workers, under one MLflow run."""
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [start_worker(root, log, "--storage", storage, "--study", "shared") for log in logs]
    for worker, log in zip(workers, logs):
        finish(worker, log)
    trials = optuna.load_study(study_name="shared", storage=optuna_storage_url(storage, root)).trials
    assert [trial.number for trial in trials] == [0, 1, 2, 3]
    assert all(trial.state == TrialState.COMPLETE for trial in trials)
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 4
    pids = {trial.system_attrs[WORKER_ATTR]["pid"] for trial in trials}
    assert pids == {worker.pid for worker in workers}           # both took part
    runs, parents = trial_runs(root, "shared")
    assert sorted(runs["tags.optuna_trial"].astype(int)) == [0, 1, 2, 3]   # one MLflow run per trial
    assert len(parents) == 1 and set(runs["tags.mlflow.parentRunId"]) == set(parents["run_id"])


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres_url():
    """A throwaway Postgres server (trust auth on 127.0.0.1), run as the postgres user when we are root."""
    if not (POSTGRES_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL server binaries at {POSTGRES_BIN} (Debian's postgresql-15)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="deocclude-hpo-pg-"))
    if as_postgres:
        shutil.chown(home, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = home / "data"
    run = lambda *command: subprocess.run([*as_postgres, *command], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w", "-o",
            f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
        run(str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_postgres, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_one_study_on_postgres(dataset_root, tmp_path, postgres_url):
    root = project(dataset_root, tmp_path / "project", {"hpo": {"random_trials": 3}})
    two_workers_share_one_study(root, postgres_url, tmp_path)


def test_random_trials_then_tpe_and_the_best_weights_train_again(dataset_root, tmp_path):
    root = project(dataset_root, tmp_path / "project")
    cfg = config(root)
    hpo.run(cfg)
    study = load_study(cfg)
    assert [trial.system_attrs[SAMPLER_ATTR] for trial in study.trials] == ["random", "random", "tpe"]
    runs, _ = trial_runs(root, study.study_name)
    assert dict(zip(runs["tags.optuna_trial"], runs["tags.optuna_sampler"])) == {"0": "random", "1": "random", "2": "tpe"}
    # The random trials drew what RandomSampler draws with their seed; the TPE one did not.
    for trial in study.trials:
        replay = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=trial_seed(cfg.seed, trial.number)))
        drawn = replay.ask({term: trial.distributions[term] for term in TERMS}).params
        assert (drawn == trial.params) == (trial.number < 2), (trial.number, drawn, trial.params)

    best = study.best_trial
    assert tuned_weights(root) == {term: round(best.params[term], 6) for term in TERMS}
    tuned = config(root)
    assert tuned.inpainter.loss_weights == {**cfg.inpainter.loss_weights, **tuned_weights(root)}
    assert tuned.inpainter.loss_weights["hole_l1"] == tiny_params()["inpainter"]["loss_weights"]["hole_l1"]
    assert tuned.params_hash != cfg.params_hash                # registered models tell tuned weights apart
    train_inpainter.run(tuned)
    metrics = json.loads((Paths(root).training_reports / "inpainter_metrics.json").read_text())
    assert metrics["val_psnr_masked"] == best.value             # the best trial's model, trained again
    summary = json.loads((root / "reports" / "hpo" / "summary.json").read_text())
    assert summary["best"] == {"trial": best.number, "value": best.value, "loss_weights": tuned_weights(root)}
    assert {path.name for path in (root / "reports" / "hpo").glob("*.png")} == {
        "optimization_history.png", "intermediate_values.png", "param_importances.png"}

    untuned = load_config(write_params(root, tiny_params(merged(SEARCH, {"hpo": {"apply": False}}))), env={})
    assert untuned.inpainter.loss_weights == tiny_params()["inpainter"]["loss_weights"]


class PruneAllButTheFirst(optuna.pruners.BasePruner):
    """Prunes every trial but trial 0 at its first report: a hopeless trial, known in advance."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number > 0


def test_a_hopeless_trial_is_pruned_after_its_first_epoch(dataset_root, tmp_path):
    root = project(dataset_root, tmp_path / "project", {"inpainter": {"epochs": 3}, "hpo": {"tpe_trials": 0}})
    cfg = config(root)
    hpo.run(cfg, pruner=PruneAllButTheFirst())
    first, second = load_study(cfg).trials
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [0, 1, 2]
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == [0]   # stopped after epoch 1
    runs, _ = trial_runs(root, hpo.study_name(cfg))
    pruned_run = runs[runs["tags.optuna_trial"] == "1"]
    assert pruned_run["status"].tolist() == ["KILLED"] and pruned_run["tags.optuna_state"].tolist() == ["PRUNED"]
    assert "metrics.objective" not in pruned_run or pruned_run["metrics.objective"].isna().all()
    assert tuned_weights(root) == {term: round(first.params[term], 6) for term in TERMS}
    assert not (Paths(root).models / ".hpo").exists()          # no trial checkpoints left behind
    # One completed trial: no parameter importances, the other plots all the same.
    assert {path.name for path in (root / "reports" / "hpo").glob("*.png")} == {
        "optimization_history.png", "intermediate_values.png"}


def test_no_trials_write_an_empty_file_and_change_nothing(dataset_root, tmp_path):
    root = project(dataset_root, tmp_path / "project", {"hpo": {"random_trials": 0, "tpe_trials": 0}})
    cfg = config(root)
    started = time.perf_counter()
    hpo.run(cfg)
    assert time.perf_counter() - started < 2
    assert tuned_weights(root) == {}
    assert not (root / "optuna.db").exists() and not (root / "mlflow.db").exists()
    assert config(root).inpainter == cfg.inpainter


def test_hpo_params_are_checked_and_the_storage_password_stays_out_of_params(tmp_path):
    def params_with(values: dict) -> Path:
        return write_params(tmp_path, tiny_params({"hpo": values}))

    with pytest.raises(ConfigError, match=r"params.yaml: hpo.storage must not hold a password; .*DEOCCLUDE_OPTUNA_STORAGE"):
        load_config(params_with({"storage": "postgresql://optuna:secret@db/optuna"}), env={})
    with pytest.raises(ConfigError, match=r"params.yaml: hpo.metric must be one of .*got 'val/fid'"):
        load_config(params_with({"metric": "val/fid"}), env={})
    with pytest.raises(ConfigError, match=r"params.yaml: hpo.terms: unknown loss term\(s\) \['lpips'\]"):
        load_config(params_with({"terms": ["l1", "lpips"]}), env={})
    with pytest.raises(ConfigError, match=r"params.yaml: hpo.step must divide"):
        load_config(params_with({"low": 1.0, "high": 10.0, "step": 0.7}), env={})
    cfg = load_config(params_with({}), env={"DEOCCLUDE_OPTUNA_STORAGE": "postgresql://optuna:secret@db:5432/optuna"})
    assert cfg.hpo.storage == "postgresql+psycopg://optuna:secret@db:5432/optuna"
    assert masked_url(cfg.hpo.storage) == "postgresql+psycopg://optuna:***@db:5432/optuna"
    assert load_config(params_with({}), env={}).hpo.storage == f"sqlite:///{tmp_path / 'optuna.db'}"
