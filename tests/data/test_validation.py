import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.data.dataset import MANIFEST, read_manifest, sha256_file, write_manifest
from pipeline.data.validation import DataValidationError, validate_dataset, validation_pages
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
    summary = json.loads((results / "summary.json").read_text())
    assert summary["success"] is True and summary["suite"] == "deocclude_synthetic"
    assert summary["evaluated_expectations"] == len(outcome.result["results"]) and summary["failed_expectations"] == 0
    # The Checkpoint's action wrote Data Docs: the index, the suite's page and this validation's page.
    docs = results / "data_docs"
    assert outcome.docs_index == docs / "index.html" and "deocclude_synthetic" in outcome.docs_index.read_text()
    assert (docs / "expectations" / "deocclude_synthetic.html").is_file()
    [page] = validation_pages(docs)
    text = page.read_text()
    for column in ("image_readable", "mask_binary", "label_values_allowed", "mask_matches_labels", "clean_is_image"):
        assert column in text
    assert not (results / "result.html").exists()


def test_corrupt_png_is_caught(dataset):
    cfg, root, rows = dataset
    image = root / rows[2]["image_path"]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    message = failing(cfg)
    assert "expect_column_values_to_be_in_set(image_readable)" in message and f"id={rows[2]['id']}" in message
    assert str(root / MANIFEST) in message
    assert json.loads((Paths(cfg.root).validation / "summary.json").read_text())["success"] is False
    assert "suite deocclude_synthetic" in message and "data_docs/index.html" in message
    [page] = validation_pages(Paths(cfg.root).validation / "data_docs")
    assert "image_readable" in page.read_text() and "Failed" in page.read_text()


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


def test_label_values_out_of_range_and_a_mask_disagreeing_with_its_labels_are_caught(dataset):
    cfg, root, rows = dataset
    labels = np.asarray(Image.open(root / rows[5]["label_path"])).copy()
    labels[0, 0] = 7
    Image.fromarray(labels).save(root / rows[5]["label_path"])
    mask = np.asarray(Image.open(root / rows[6]["mask_path"])).copy()
    mask[0, 0] = 255 - mask[0, 0]
    Image.fromarray(mask).save(root / rows[6]["mask_path"])
    rows[6]["mask_ratio"] = round(float((mask > 127).mean()), 6)
    write_manifest(root, rows)
    message = failing(cfg)
    assert f"expect_column_values_to_be_in_set(label_values_allowed): id={rows[5]['id']}" in message
    [line] = [line for line in message.splitlines() if "(mask_matches_labels)" in line]
    assert f"id={rows[6]['id']}" in line


def test_an_image_still_carrying_an_exif_rotation_is_caught(dataset):
    cfg, root, rows = dataset
    path = root / rows[7]["image_path"]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(path).save(path, exif=exif.tobytes())
    rows[7]["sha256"] = sha256_file(path)
    write_manifest(root, rows)
    assert f"expect_column_values_to_be_in_set(image_upright): id={rows[7]['id']}" in failing(cfg)


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory):
    """A labelled-kind dataset as the ingest writes it (images are their own clean faces)."""
    from pipeline.ingest.ingest import ingest
    from tests.ingest.test_ingest import SETTINGS, labelled_folder

    root = tmp_path_factory.mktemp("labelled")
    ingest(labelled_folder(root / "realocc"), "labelled", "realocc", root / "data", SETTINGS, progress=False)
    return root / "data" / "realocc"


def test_each_source_kind_has_its_own_suite(labelled_dataset, tmp_path):
    outcome = validate_dataset(labelled_dataset, 32, (0.01, 0.6), 3, kind="labelled", docs_dir=tmp_path / "docs")
    assert outcome.success, outcome.describe(labelled_dataset / MANIFEST)
    assert outcome.suite == "deocclude_labelled" and validate_dataset(labelled_dataset, 32, (0.01, 0.6)).kind == "labelled"
    checked = {item["expectation_config"]["kwargs"].get("column") for item in outcome.result["results"]}
    assert {"source_path", "source_exif_rotated", "source_phash", "source_row"} <= checked
    assert "source_phash" in validation_pages(tmp_path / "docs")[0].read_text()
    # The synthetic suite refuses it where the kinds differ: no separate clean face, the ingest's type.
    wrong = validate_dataset(labelled_dataset, 32, (0.01, 0.6), 3, kind="synthetic")
    failed = {(failure["expectation"], failure["column"]) for failure in wrong.failures}
    assert ("expect_column_values_to_be_in_set", "clean_is_image") in failed
    assert ("expect_column_values_to_not_be_in_set", "occluder_type") in failed
    assert not validate_dataset(labelled_dataset, 32, (0.01, 0.6), 3, kind="masks").success


def test_the_ingest_facts_in_sources_csv_are_validated(labelled_dataset, tmp_path):
    target = tmp_path / "realocc"
    shutil.copytree(labelled_dataset, target)
    with open(target / "sources.csv", newline="", encoding="utf-8") as handle:
        sources = list(csv.DictReader(handle))
    sources[0]["phash"] = "xyz"
    sources[1]["exif_rotated"] = "True"              # a labelled image is never turned (its labels would not line up)
    sources[2]["source_path"] = sources[3]["source_path"]
    with open(target / "sources.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(sources[0]))
        writer.writeheader()
        writer.writerows(sources[:-1])                # the last sample has no row
    outcome = validate_dataset(target, 32, (0.01, 0.6), 3, kind="labelled")
    message = outcome.describe(target / MANIFEST)
    assert f"expect_column_values_to_match_regex(source_phash): id={sources[0]['id']}" in message
    assert f"expect_column_values_to_be_in_set(source_exif_rotated): id={sources[1]['id']}" in message
    assert "expect_column_values_to_be_unique(source_path)" in message
    assert f"expect_column_values_to_be_in_set(source_row): id={sources[-1]['id']}" in message


def test_an_unknown_kind_is_refused_by_name(dataset):
    _, root, _ = dataset
    with pytest.raises(ValueError, match="no validation suite for source kind 'photos'; known: synthetic, faces"):
        validate_dataset(root, 32, (0.01, 0.6), kind="photos")
