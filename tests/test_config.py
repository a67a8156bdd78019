import pytest

from pipeline.config import ConfigError, load_config
from tests.conftest import tiny_params, write_params


def test_repository_params_load():
    from tests.conftest import REPO

    cfg = load_config(REPO / "params.yaml", env={})
    assert cfg.registry.tracking_uri == f"sqlite:///{REPO / 'mlflow.db'}"
    assert cfg.registry.artifact_root == REPO / "mlartifacts"


def test_environment_overrides_the_tracking_store(tmp_path):
    cfg = load_config(write_params(tmp_path, tiny_params()), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"})
    assert cfg.registry.tracking_uri == "http://127.0.0.1:5999"
    assert cfg.registry.artifact_root is None


def test_same_params_same_hash_and_a_change_changes_it(tmp_path):
    first = load_config(write_params(tmp_path, tiny_params()), env={}).params_hash
    assert load_config(tmp_path / "params.yaml", env={}).params_hash == first
    assert load_config(write_params(tmp_path, tiny_params({"finetune": {"lr": 0.1}})), env={}).params_hash != first


@pytest.mark.parametrize("override, message", [
    ({"segmenter": {"lr": -1}}, "segmenter.lr must be > 0, got -1"),
    ({"data": {"splits": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "data.splits must sum to 1"),
    ({"data": {"occluders": {"scarf": 1}}}, "unknown type(s) ['scarf']"),
    ({"inpainter": {"epochz": 3}}, "unknown key(s) in 'inpainter': epochz"),
    ({"data": {"mask_ratio_min": 0.7}}, "mask_ratio_min/max"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, override, message):
    path = write_params(tmp_path, tiny_params(override))
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert str(path) in str(error.value) and message in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: file not found"):
        load_config(tmp_path / "params.yaml")
