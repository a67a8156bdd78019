import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.data.dataset import MANIFEST, read_manifest, write_manifest
from pipeline.data.validation import DataValidationError
from pipeline.stages import generate, validate
from pipeline.stages.common import Paths


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory):
    from tests.conftest import tiny_params, write_params
    from pipeline.config import load_config

    root = tmp_path_factory.mktemp("dataset")
    cfg = load_config(write_params(root, tiny_params({"data": {"count": 12}})))
    generate.run(cfg)
    return cfg


@pytest.fixture
def dataset(clean_dataset, tmp_path):
    """A fresh, writable copy of the valid dataset and its config."""
    from pipeline.config import load_config

    shutil.copytree(Paths(clean_dataset.root).dataset, Paths(tmp_path).dataset)
    shutil.copy(clean_dataset.root / "params.yaml", tmp_path / "params.yaml")
    cfg = load_config(tmp_path / "params.yaml")
    return cfg, Paths(tmp_path).dataset, read_manifest(Paths(tmp_path).dataset)


def failing(cfg):
    with pytest.raises(DataValidationError) as error:
        validate.run(cfg)
    return str(error.value)


def test_generated_dataset_passes_and_leaves_results(dataset):
    cfg, root, _ = dataset
    outcome = validate.run(cfg)
    assert outcome.success
    results = Paths(cfg.root).validation
    assert json.loads((results / "summary.json").read_text())["success"] is True
    assert "passed" in (results / "result.html").read_text()


def test_corrupt_png_is_caught(dataset):
    cfg, root, rows = dataset
    image = root / rows[2]["image_path"]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    message = failing(cfg)
    assert "expect_column_values_to_be_in_set(image_readable)" in message and f"id={rows[2]['id']}" in message
    assert str(root / MANIFEST) in message
    assert json.loads((Paths(cfg.root).validation / "summary.json").read_text())["success"] is False
    assert "FAILED" in (Paths(cfg.root).validation / "result.html").read_text()


def test_wrong_size_is_caught(dataset):
    cfg, root, rows = dataset
    path = root / rows[1]["image_path"]
    Image.open(path).resize((20, 20)).save(path)
    message = failing(cfg)
    assert "image_width" in message and f"id={rows[1]['id']}" in message


def test_non_binary_mask_is_caught(dataset):
    cfg, root, rows = dataset
    path = root / rows[0]["mask_path"]
    mask = np.asarray(Image.open(path)).copy()
    mask[0, :4] = 128
    Image.fromarray(mask).save(path)
    assert "mask_binary" in failing(cfg)


def test_duplicate_sha256_is_caught(dataset):
    cfg, root, rows = dataset
    for key in ("image_path", "clean_path", "mask_path", "label_path"):
        shutil.copy(root / rows[0][key], root / rows[3][key])
    rows[3].update(sha256=rows[0]["sha256"], mask_ratio=rows[0]["mask_ratio"])
    write_manifest(root, rows)
    message = failing(cfg)
    assert "expect_column_values_to_be_unique(sha256)" in message and f"id={rows[3]['id']}" in message


def test_empty_split_is_caught(dataset):
    cfg, root, rows = dataset
    for row in rows:
        if row["split"] == "val":
            row["split"] = "train"
    write_manifest(root, rows)
    message = failing(cfg)
    assert "expect_column_distinct_values_to_contain_set(split)" in message


def test_mask_ratio_out_of_range_is_caught(dataset):
    cfg, root, rows = dataset
    path = root / rows[4]["mask_path"]
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(path)
    rows[4]["mask_ratio"] = 1.0
    write_manifest(root, rows)
    message = failing(cfg)
    assert "expect_column_values_to_be_between(mask_ratio)" in message and f"id={rows[4]['id']}" in message
