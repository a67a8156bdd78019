"""Lineage by content against a real MLflow store (sqlite)."""

from __future__ import annotations

import time

import mlflow

from pipeline.registry.tracking import checkpoint_tag, training_run_of


def test_the_training_run_is_found_by_its_checkpoints_content_in_any_experiment(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    segmenter = tmp_path / "models" / "segmenter.pt"
    try:
        assert training_run_of(segmenter, "abc") is None   # an empty store
        runs = {}
        for experiment, name, md5 in (("first", "older", "abc"), ("second", "newer", "abc"), ("second", "other", "def")):
            mlflow.set_experiment(experiment)
            with mlflow.start_run(run_name=name) as run:
                mlflow.set_tags({checkpoint_tag(segmenter): md5})
            runs[name] = run.info.run_id
            time.sleep(0.01)   # distinct start times
        assert checkpoint_tag(segmenter) == "checkpoint_md5.segmenter"
        assert training_run_of(segmenter, "abc") == runs["newer"]   # the latest run that wrote these bytes
        assert training_run_of(segmenter, "def") == runs["other"]
        assert training_run_of(segmenter, "0123") is None
        assert training_run_of(tmp_path / "models" / "inpainter.pt", "abc") is None   # another file's tag
    finally:
        mlflow.set_tracking_uri(previous)
