"""Drift against a reference dataset version: KS tests on LBP (P = 24, R = 8), colour and mask ratio;
the drift stage's report, its warn / fail verdicts, and its references (a folder, `previous`, none)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from pipeline.config import ConfigError, load_config
from pipeline.data.dataset import read_manifest, sha256_file, write_manifest
from pipeline.data.drift import (
    DatasetFiles,
    DriftThresholds,
    dataset_features,
    folder_dataset,
    ks_tests,
    lbp_histogram,
    sample_rows,
)
from pipeline.stages import drift, generate
from pipeline.stages.common import Paths
from tests.conftest import deocclude, tiny_params, write_params

THRESHOLDS = DriftThresholds(p_value=0.01, statistic=None)


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """The stage's in-process MLflow run uses each project's own store; what mlflow writes into
    os.environ is undone afterwards, so no later test finds this one's store."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """48 synthetic samples at 32 px: the generator's faces and occluders, every mask-ratio stratum."""
    root = tmp_path_factory.mktemp("faces")
    generate.run(load_config(write_params(root, tiny_params({"data": {"count": 48}}))))
    return Paths(root).dataset


def altered_copy(dataset: Path, target: Path, change) -> Path:
    """The dataset with every image passed through `change`, its manifest's hashes kept true."""
    shutil.copytree(dataset, target)
    rows = read_manifest(target)
    for row in rows:
        path = target / row["image_path"]
        change(Image.open(path).convert("RGB")).save(path)
        row["sha256"] = sha256_file(path)
    write_manifest(target, rows)
    return target


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(1.5))


def tinted(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip(pixels * np.array([1.0, 0.8, 0.6]) + np.array([40, 0, 0]), 0, 255).astype(np.uint8))


def groups(tests) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for test in tests:
        found[test.group] = found.get(test.group, False) or test.drifted
    return found


def test_lbp_histogram_is_paper_003s_uniform_p24_r8():
    rng = np.random.default_rng(0)
    histogram = lbp_histogram(rng.integers(0, 256, (40, 40), dtype=np.uint8))
    assert histogram.shape == (26,) and abs(histogram.sum() - 1) < 1e-9
    # A flat image: every neighbour >= the centre, code P, but within R = 8 pixels of the border.
    flat = lbp_histogram(np.full((40, 40), 128, np.uint8))
    assert flat.argmax() == 24 and abs(flat[24] - (40 - 2 * 8) ** 2 / 40 ** 2) < 1e-9


def test_two_halves_of_one_set_do_not_drift_but_blurred_faces_do_in_lbp_only(faces, tmp_path):
    whole = folder_dataset(faces, "current")
    first = DatasetFiles("a", "first half", whole.rows[0::2], whole.locate)
    second = DatasetFiles("b", "second half", whole.rows[1::2], whole.locate)
    halves = ks_tests(dataset_features(first, 32, 500, 0), dataset_features(second, 32, 500, 0), THRESHOLDS)
    assert groups(halves) == {"lbp": False, "colour": False, "mask_ratio": False}
    assert len([t for t in halves if t.group == "lbp"]) == 26

    blurry = folder_dataset(altered_copy(faces, tmp_path / "blurry", blurred), "blurry")
    tests = ks_tests(dataset_features(blurry, 32, 500, 0), dataset_features(whole, 32, 500, 0), THRESHOLDS)
    assert groups(tests) == {"lbp": True, "colour": False, "mask_ratio": False}
    assert max(t.statistic for t in tests if t.group == "lbp") > 0.5


def test_a_tinted_set_drifts_in_colour(faces, tmp_path):
    whole = folder_dataset(faces, "current")
    tint = folder_dataset(altered_copy(faces, tmp_path / "tinted", tinted), "tinted")
    tests = {t.name: t for t in ks_tests(dataset_features(whole, 32, 500, 0), dataset_features(tint, 32, 500, 0), THRESHOLDS)}
    assert tests["colour_r"].drifted and tests["colour_b"].drifted
    assert tests["colour_b"].current_mean < tests["colour_b"].reference_mean
    assert not tests["mask_ratio"].drifted


def test_larger_occluders_drift_in_mask_ratio(faces):
    whole = folder_dataset(faces, "current")
    ordered = sorted(whole.rows, key=lambda row: float(row["mask_ratio"]))
    small = DatasetFiles("small", "small occluders", ordered[:24], whole.locate)
    large = DatasetFiles("large", "large occluders", ordered[24:], whole.locate)
    tests = {t.name: t for t in ks_tests(dataset_features(small, 32, 500, 0), dataset_features(large, 32, 500, 0), THRESHOLDS)}
    assert tests["mask_ratio"].drifted and tests["mask_ratio"].statistic > 0.9
    # A D threshold above what is observed turns the verdict off, whatever the p-value.
    strict = ks_tests(dataset_features(small, 32, 500, 0), dataset_features(large, 32, 500, 0), DriftThresholds(0.01, 1.01))
    assert not any(t.drifted for t in strict)


def test_the_sample_is_bounded_and_deterministic(faces):
    rows = read_manifest(faces)
    assert sample_rows(rows, 10, 7) == sample_rows(list(reversed(rows)), 10, 7)
    assert len(sample_rows(rows, 10, 7)) == 10 and sample_rows(rows, 10, 7) != sample_rows(rows, 10, 8)
    assert len(sample_rows(rows, 500, 7)) == len(rows)


@pytest.fixture(scope="module")
def project(faces, tmp_path_factory) -> Path:
    """A project whose dataset is the faces and whose drift reference is their blurred, tinted copy."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(faces, Paths(root).dataset)
    altered_copy(faces, root / "data" / "ingested" / "blurry", lambda image: tinted(blurred(image)))
    return root


def with_drift(root: Path, **drift_params) -> Path:
    return write_params(root, tiny_params({"data": {"count": 48}, "drift": drift_params}))


def test_fail_mode_exits_non_zero_naming_the_features_and_the_reference(project):
    with_drift(project, reference="data/ingested/blurry", on_drift="fail", p_value=0.01, statistic=0.2, sample=40)
    result = deocclude(project, "drift")
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("deocclude drift: error: drift in ") and "reference data/ingested/blurry" in error
    assert "drifted features: lbp_" in error and "colour_b" in error and "drift.on_drift is fail" in error
    report = json.loads((Paths(project).drift / "drift.json").read_text())
    assert report["drifted"] is True and report["verdict"] == "drift" and report["summary"] in error
    assert report["groups"]["lbp"]["drifted"] and report["groups"]["colour"]["drifted"]
    assert not report["groups"]["mask_ratio"]["drifted"] and report["reference"]["sampled"] == 40
    page = (Paths(project).drift / "drift.html").read_text()
    assert "Dataset drift: DRIFT" in page and page.count("data:image/png;base64,") == 3 and "lbp_25" in page
    # Logged on the stage's MLflow run, the run recorded even though the stage failed.
    logged = sorted(p.relative_to(project / "mlartifacts").parts[-2:] for p in (project / "mlartifacts").rglob("drift.*"))
    assert logged == [("drift", "drift.html"), ("drift", "drift.json")]


def test_warn_mode_logs_a_warning_and_exits_zero(project):
    with_drift(project, reference="data/ingested/blurry", on_drift="warn", sample=40)
    result = deocclude(project, "drift")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "WARNING" in line and "drift in " in line]
    assert "drifted features: lbp_" in warning and "going on" in warning
    assert json.loads((Paths(project).drift / "drift.json").read_text())["drifted"] is True


def cache_as_dvc_would(root: Path, dataset: Path) -> str:
    """Put `dataset` in root's DVC cache as a directory version (.dir listing + files); its hash."""
    cache = root / ".dvc" / "cache" / "files" / "md5"
    listing = []
    for path in sorted(p for p in dataset.rglob("*") if p.is_file()):
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        (cache / md5[:2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, cache / md5[:2] / md5[2:])
        listing.append({"md5": md5, "relpath": path.relative_to(dataset).as_posix()})
    text = json.dumps(listing, separators=(", ", ": "))
    dir_md5 = hashlib.md5(text.encode()).hexdigest() + ".dir"
    (cache / dir_md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / dir_md5[:2] / dir_md5[2:]).write_text(text)
    return dir_md5


def test_previous_compares_with_the_version_git_head_records_from_the_dvc_cache(project, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(Paths(project).dataset, Paths(root).dataset)
    cfg = load_config(with_drift(root, reference="previous", sample=40))
    assert drift.run(cfg)["verdict"] == "no reference"   # not a git repository: nothing recorded yet
    dir_md5 = cache_as_dvc_would(root, project / "data" / "ingested" / "blurry")
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"generate": {
        "cmd": "bin/deocclude generate", "outs": [{"path": "data/dataset", "md5": dir_md5}]}}}))
    git = lambda *args: subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t.invalid", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    git("add", "dvc.lock")
    git("-c", "user.email=t@t.invalid", "-c", "user.name=t", "commit", "-q", "-m", "dataset version")
    report = drift.run(cfg)
    assert report["drifted"] and report["reference"]["id"] == dir_md5
    assert report["reference"]["source"].startswith("data/dataset at ")
    shutil.rmtree(root / ".dvc" / "cache")
    missing = drift.run(cfg)
    assert missing["verdict"] == "no reference" and "not in the local DVC cache" in missing["summary"]


def test_no_reference_writes_a_report_saying_so(project, tmp_path):
    root = tmp_path / "fresh"
    shutil.copytree(Paths(project).dataset, Paths(root).dataset)
    report = drift.run(load_config(with_drift(root, reference="")))
    assert report == json.loads((Paths(root).drift / "drift.json").read_text())
    assert report["drifted"] is False and report["verdict"] == "no reference" and report["reference"] is None
    assert "drift.reference is empty" in report["summary"]
    assert "no reference" in (Paths(root).drift / "drift.html").read_text()


def test_a_missing_reference_folder_is_named(project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(Paths(project).dataset, Paths(root).dataset)
    with pytest.raises(Exception, match=r"params.yaml: drift.reference 'data/ingested/nope': .*manifest.csv not found"):
        drift.run(load_config(with_drift(root, reference="data/ingested/nope")))


@pytest.mark.parametrize(("values", "message"), [
    ({"on_drift": "stop"}, "drift.on_drift must be one of ['warn', 'fail'], got 'stop'"),
    ({"p_value": 1.5}, "drift.p_value must be in (0, 1) or null, got 1.5"),
    ({"statistic": 0}, "drift.statistic must be in (0, 1] or null, got 0"),
    ({"p_value": None, "statistic": None}, "set at least one threshold"),
    ({"sample": 1}, "drift.sample must be an integer >= 2"),
    ({"threshold": 0.1}, "unknown key(s) in 'drift': threshold"),
])
def test_bad_drift_params_are_refused_naming_params_yaml(tmp_path, values, message):
    path = write_params(tmp_path, tiny_params({"drift": values}))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(path) in str(refused.value) and message in str(refused.value)

