"""Stages called directly on a tiny config: reproducible metrics, and the pretrained switch honoured."""

import json
import shutil

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.models.pretrained import PretrainedWeightsMissing
from pipeline.stages import generate, train_segmenter
from pipeline.stages.common import Paths
from tests.conftest import tiny_params, write_params


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    cfg = load_config(write_params(root, tiny_params({"segmenter": {"epochs": 2}})),
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    generate.run(cfg)
    return root


def config_in(root, tmp_path, overrides=None):
    shutil.copytree(Paths(root).dataset, Paths(tmp_path).dataset)
    return load_config(write_params(tmp_path, tiny_params({"segmenter": {"epochs": 2}, **(overrides or {})})),
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})


def test_same_params_and_data_give_the_same_metrics(dataset_root, tmp_path):
    metrics = []
    for attempt in ("first", "second"):
        cfg = config_in(dataset_root, tmp_path / attempt)
        train_segmenter.run(cfg)
        metrics.append(json.loads((Paths(cfg.root).training_reports / "segmenter_metrics.json").read_text()))
    assert metrics[0] == metrics[1]


def test_pretrained_request_without_weights_fails_naming_the_file(dataset_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"arch": "soclnet", "arch_kwargs": {}, "pretrained": True,
                                                           "epochs": 1}})
    with pytest.raises(PretrainedWeightsMissing, match=str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50")):
        train_segmenter.run(cfg)
    assert not Paths(cfg.root).segmenter.exists()


def test_pretrained_is_refused_for_an_architecture_without_weights(dataset_root, tmp_path):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"arch": "sa-unet", "arch_kwargs": {"width": 4, "max_channels": 16},
                                                           "pretrained": True}})
    with pytest.raises(ConfigError, match="'sa-unet' has no pretrained weights"):
        train_segmenter.run(cfg)
