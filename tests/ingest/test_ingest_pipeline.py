"""Ingested data in a real DVC project: `deocclude data ingest`, `data versions`, and the generate
stage ingesting `data.raw` so that new raw files are a new dataset version."""

from __future__ import annotations

import subprocess

import numpy as np
import yaml
from PIL import Image

from flows.changes import pending_changes
from pipeline.data.synthetic import render_sample
from tests.conftest import BIN, deocclude, make_project, project_env, write_params, tiny_params


def write_faces(folder, count: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        clean = render_sample(11, index, 48, {"box": 1}, (0.01, 0.1)).clean_image
        Image.fromarray(clean).save(folder / f"personne n°{index:02d}.jpg", quality=92)


def test_cli_ingest_adds_a_versioned_dataset_or_nothing(tmp_path):
    root = make_project(tmp_path / "project")
    raw = tmp_path / "mes photos"
    write_faces(raw, 12)
    (raw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(raw / "grey.png")
    refused = deocclude(root, "data", "ingest", str(raw), "--kind", "faces", "--name", "celeb test")
    assert refused.returncode == 1
    assert "broken.jpg" in refused.stderr and "grey.png: grayscale" in refused.stderr and "nothing ingested" in refused.stderr
    assert not (root / "data" / "ingested" / "celeb test").exists()
    assert not (root / "data" / "ingested" / "celeb test.dvc").exists()

    (raw / "broken.jpg").unlink()
    (raw / "grey.png").unlink()
    added = deocclude(root, "data", "ingest", str(raw), "--kind", "faces", "--name", "celeb test", "--progress")
    assert added.returncode == 0, added.stderr
    assert "ingested 12 faces samples" in added.stdout and "checking" in added.stderr   # the progress bar
    record = yaml.safe_load((root / "data" / "ingested" / "celeb test.dvc").read_text())
    version = record["outs"][0]["md5"]
    assert f"dataset version {version}" in added.stdout
    listed = deocclude(root, "data", "versions")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.startswith(version))
    assert "celeb test" in line and "checked at ingest (faces, 12 samples)" in line


def test_the_generate_stage_ingests_data_raw_and_new_raw_files_are_a_new_version(tmp_path):
    params = tiny_params({"data": {"source": "faces", "raw": "data/raw/faces", "tag": "celeb-v1"}})
    root = make_project(tmp_path / "project")
    write_params(root, params)
    write_faces(root / "data" / "raw" / "faces", 30)
    env = project_env(root)
    repro = subprocess.run([str(BIN / "dvc"), "repro", "validate"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert [dep["path"] for dep in lock["generate"]["deps"]][0] == "data/raw/faces"
    first = next(out["md5"] for out in lock["generate"]["outs"] if out["path"] == "data/dataset")
    assert (root / "data" / "dataset" / "sources.csv").is_file()
    assert not {"generate", "validate"} & set(pending_changes(root).stale_stages)

    write_faces(root / "data" / "raw" / "faces", 3, start=30)
    changes = pending_changes(root)
    assert "generate" in changes.stale_stages and "data/raw/faces" in changes.data
    repro = subprocess.run([str(BIN / "dvc"), "repro", "validate"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert repro.returncode == 0, repro.stderr[-3000:]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    second = next(out["md5"] for out in lock["generate"]["outs"] if out["path"] == "data/dataset")
    assert second != first
    listed = deocclude(root, "data", "versions")
    assert listed.stdout.splitlines()[1].startswith(second) and "celeb-v1" in listed.stdout
    assert "passed (" in listed.stdout.splitlines()[1]
