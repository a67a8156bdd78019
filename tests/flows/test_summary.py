"""The flow's closing summary: links to the MLflow runs, and no failure when one cannot be built."""

from __future__ import annotations

import logging

from flows.summary import LOCAL_MLFLOW_UI, mlflow_run_link


def test_a_run_link_names_the_runs_experiment_and_a_missing_run_gives_none(tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    monkeypatch.delenv("DEOCCLUDE_MLFLOW_UI_URL", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("links")
    run_id = client.create_run(experiment_id).info.run_id
    assert mlflow_run_link(store, run_id) == f"{LOCAL_MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}"
    monkeypatch.setenv("DEOCCLUDE_MLFLOW_UI_URL", "http://mlflow.team:8080/")
    assert mlflow_run_link(store, run_id) == f"http://mlflow.team:8080/#/experiments/{experiment_id}/runs/{run_id}"

    missing = "f" * 32
    with caplog.at_level(logging.WARNING, logger="flows.summary"):
        assert mlflow_run_link(store, missing) is None
    assert missing in caplog.text
