"""Facts recorded at write time stand in for decoding only while the files are the ones measured."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline.data.dataset import read_manifest
from pipeline.data.facts import FACTS_FILE, read_facts
from pipeline.data.validation import _image_facts, validate_dataset
from pipeline.ingest.ingest import ingest
from tests.data.test_validation import clean_dataset, dataset  # noqa: F401  (fixtures)
from tests.ingest.test_ingest import SETTINGS, faces_folder, labelled_folder


def test_recorded_facts_are_what_decoding_the_files_measures(dataset, tmp_path):  # noqa: F811
    _, root, rows = dataset
    ingest(faces_folder(tmp_path / "faces", 9), "faces", "faces", tmp_path / "data", SETTINGS, progress=False)
    ingest(labelled_folder(tmp_path / "labelled"), "labelled", "labelled", tmp_path / "data", SETTINGS, progress=False)
    for folder in (root, tmp_path / "data" / "faces", tmp_path / "data" / "labelled"):
        recorded = read_facts(folder)
        manifest = read_manifest(folder)
        assert set(recorded) == {row["id"] for row in manifest}
        for row in manifest:
            assert recorded[row["id"]]["facts"] == _image_facts(folder, row), (folder, row["id"])


def test_a_file_changed_after_writing_is_measured_again_and_caught(dataset):  # noqa: F811
    cfg, root, rows = dataset
    victim = rows[2]
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(root / victim["mask_path"])   # grey: not binary
    outcome = validate_dataset(root, cfg.data.resolution, (cfg.data.mask_ratio_min, cfg.data.mask_ratio_max))
    assert not outcome.success
    failed = {failure["column"]: failure["examples"] for failure in outcome.failures}
    assert any(victim["id"] in example for example in failed["mask_binary"])


def test_unreadable_facts_fall_back_to_decoding(dataset):  # noqa: F811
    cfg, root, rows = dataset
    (root / FACTS_FILE).write_text("{not json\n")
    assert read_facts(root) == {}
    assert validate_dataset(root, cfg.data.resolution, (cfg.data.mask_ratio_min, cfg.data.mask_ratio_max)).success
    record = {"id": rows[0]["id"], "files": {}, "facts": {"mask_binary": False}}
    (root / FACTS_FILE).write_text(json.dumps(record) + "\n")   # hashes that match no file: not trusted
    assert validate_dataset(root, cfg.data.resolution, (cfg.data.mask_ratio_min, cfg.data.mask_ratio_max)).success


def test_writing_the_same_dataset_again_keeps_its_dvc_version(tmp_path):
    """The files' mtimes are kept out of what DVC hashes: regenerating gives the same version id."""
    import subprocess

    import yaml

    from tests.conftest import BIN, make_project, project_env

    root = make_project(tmp_path / "project")
    versions = []
    for _ in range(2):
        done = subprocess.run([str(BIN / "dvc"), "repro", "--force", "generate"], cwd=root,
                              env=project_env(root), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert (root / "data" / "dataset" / "facts.stat.jsonl").is_file()   # kept for validation's stat shortcut
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        versions.append(next(out["md5"] for out in lock["stages"]["generate"]["outs"] if out["path"] == "data/dataset"))
    assert versions[0] == versions[1]
