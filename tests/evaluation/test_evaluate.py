"""The evaluate stage on a tiny generated dataset with untrained networks, in a real DVC project: what
it reports and writes (metrics.json, per-image scores, bin table, Grad-CAM, the HTML report that DVC
and Chromium open), not how well the networks do."""

import csv
import json
import math
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import load_config
from pipeline.evaluation.html_report import PHOTOGRAPH_OBJECT_COLUMNS
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import create_model
from pipeline.stages import evaluate, generate
from pipeline.stages.common import Paths
from tests.conftest import BIN, TINY_ARCH_KWARGS, make_project, project_env
from tests.evaluation.browser import CHROMIUM, check_page

PAPER_BINS = ["1%-10%", "10%-20%", "20%-30%", "30%-40%", "40%-50%", "50%-60%"]


def _untrained(path, arch, task, resolution):
    torch.manual_seed(0)
    net = create_model(arch, task, **TINY_ARCH_KWARGS[arch])
    save_checkpoint(path, net, NetworkSettings(arch=arch, arch_kwargs=TINY_ARCH_KWARGS[arch], task=task,
                                               resolution=resolution))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("evaluate") / "project", {
        "data": {"mask_ratio_min": 0.01, "mask_ratio_max": 0.6},
        "evaluation": {"mask_ratio_bins": [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "latency_repeats": 2,
                       "progressive": True, "progressive_kernel": 3,
                       "same_identity_people": 2, "same_identity_references": 2, "same_identity_steps": 2}})
    cfg = load_config(root / "params.yaml")
    generate.run(cfg)
    paths = Paths(cfg.root)
    _untrained(paths.segmenter, "soclnet", "segmenter", cfg.data.resolution)
    _untrained(paths.inpainter, "ifacenet", "inpainter", cfg.data.resolution)
    _untrained(paths.finetuned_inpainter, "ifacenet", "inpainter", cfg.data.resolution)
    metrics = evaluate.run(cfg)
    return cfg, paths.evaluation, metrics


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_bin_every_baseline_and_the_photograph_set(evaluated):
    _, directory, metrics = evaluated
    assert json.loads((directory / "metrics.json").read_text()) == metrics
    for method in evaluate.METHODS:
        assert set(metrics[method]) == set(evaluate.METRICS), method
    assert {"navier_stokes", "navier_stokes_gt_mask", "telea", "telea_gt_mask", "gt_mask"} <= set(metrics)
    segmentation = metrics["segmentation"]
    assert {"iou", "miou", "iou_background", "iou_face", "iou_occluder", "dice", "dice_face", "mean_dice",
            "pixel_accuracy", "pixel_accuracy_classes", "mask_ssim"} <= set(segmentation)
    assert set(metrics["segmentation_cleanup"]) == {"none", "opening_7"}
    for variant in metrics["segmentation_cleanup"].values():
        assert {"iou", "dice", "pixel_accuracy", "mask_ssim", "miou"} <= set(variant)

    bins = _csv(directory / "by_mask_ratio.csv")
    assert [row["mask_ratio_bin"] for row in bins] == PAPER_BINS
    assert [float(row["mask_ratio_percent"]) for row in bins] == [5.5, 15.0, 25.0, 35.0, 45.0, 55.0]
    assert all(int(row["samples"]) >= 1 for row in bins)          # stratified: the 12 test samples fill all six
    for row in bins:
        for method in evaluate.METHODS:
            assert all(row[f"{method}.{name}"] != "" for name in evaluate.METRICS)

    photographs = metrics["photographs"]
    assert photographs["samples"] >= 10
    assert {"iou", "dice", "pixel_accuracy"} <= set(photographs["segmentation"])
    for method in ("end_to_end", "telea", "telea_gt_mask", "navier_stokes", "gt_mask", "occluded_input"):
        assert {"psnr_masked", "l1_masked", "ssim_masked"} <= set(photographs[method])
    by_object = photographs["by_object"]
    assert set(by_object) == {"photo", "skin", "plain", "card"}
    assert sum(row["samples"] for row in by_object.values()) == photographs["samples"]
    assert all(0 <= row["iou"] <= 1 and "end_to_end.psnr_masked" in row for row in by_object.values())
    assert all(set(row) == set(PHOTOGRAPH_OBJECT_COLUMNS) for row in by_object.values())   # what the reports show
    assert len(metrics["checks"]) >= 8 and all(isinstance(ok, bool) for ok in metrics["checks"].values())

    report = (directory / "report.md").read_text()
    assert "## Photograph set" in report and "OpenCV Telea: ground-truth mask" in report
    assert "| card |" in report
    assert all(name in report for name in PAPER_BINS)


def test_per_occluder_type_latency_and_missing_weights_are_reported(evaluated):
    cfg, _, metrics = evaluated
    manifest = _csv(cfg.root / "data/dataset/manifest.csv")
    types = {row["occluder_type"] for row in manifest if row["split"] == "test"}
    assert set(metrics["by_occluder"]) == types
    assert sum(group["end_to_end"]["samples"] for group in metrics["by_occluder"].values()) == metrics["test_samples"]
    # Wall-clock timings live beside metrics.json, which holds only what models and data decide.
    assert "latency" not in metrics
    latency = json.loads((cfg.root / "reports/eval/latency.json").read_text())
    assert "machine-dependent" in latency["note"]
    for size in (1, 32):
        assert latency[f"batch_{size}"]["median_ms"] > 0 and latency[f"batch_{size}"]["images_per_second"] > 0
    # No ImageNet weights in this test's torch cache: recorded as unavailable, never as a number.
    for name in ("lpips", "fid"):
        record = metrics["perceptual"][name]
        if not record["available"]:
            assert "missing" in record["reason"] and set(record) == {"available", "reason"}


def test_progressive_reconstruction_is_scored_per_bin_beside_one_shot_with_its_latency(evaluated):
    cfg, directory, metrics = evaluated
    assert set(evaluate.PROGRESSIVE_METHODS) <= set(metrics["methods"])
    for method in evaluate.PROGRESSIVE_METHODS:
        assert set(metrics[method]) == set(evaluate.METRICS)
    record = metrics["progressive"]
    assert (record["kernel"], record["min_hole_ratio"], record["max_steps"]) == (3, 0.2, 10)
    assert all(1 <= record["mean_steps"][m] <= record["most_steps"][m] <= 10 for m in ("gt_mask", "end_to_end"))
    assert record["most_steps"]["gt_mask"] > 1           # the 30-60 % holes take several predictions
    bins = _csv(directory / "by_mask_ratio.csv")
    for row in bins:
        for method in ("gt_mask", "gt_mask_progressive", "end_to_end", "end_to_end_progressive"):
            assert row[f"{method}.psnr_masked"] != "", (row["mask_ratio_bin"], method)
    # A hole under 20 % takes one prediction: progressive is one-shot there, bit for bit.
    assert bins[0]["gt_mask.psnr_masked"] == bins[0]["gt_mask_progressive.psnr_masked"]
    latency = json.loads((directory / "latency.json").read_text())["progressive"]
    for method in ("gt_mask", "gt_mask_progressive", "end_to_end", "end_to_end_progressive"):
        assert latency["ms_per_image"][method] > 0
    assert "52.69" in latency["note"] and "85.46" in latency["note"] and latency["slowdown"]["gt_mask"] > 0
    report = (directory / "report.md").read_text()
    section = report.split("## Progressive reconstruction (paper 004, Algorithm 1)")[1].split("\n## ")[0]
    assert "gt_mask_progressive psnr_masked" in section and "gt_mask psnr_masked" in section
    assert "progressive ms/image" in section and "one-shot ms/image" in section
    assert all(name in section for name in PAPER_BINS) and "overall" in section
    page = (directory / "report.html").read_text()
    assert "Progressive reconstruction (paper 004): with and without" in page
    assert "progressive ms/image" in page and "end_to_end_progressive psnr_masked" in page


def test_the_same_identity_test_scores_three_methods_inside_the_occluder(evaluated):
    from mlflow import MlflowClient

    cfg, directory, metrics = evaluated
    record = metrics["same_identity"]
    assert (record["people"], record["references"], record["resolution"]) == (2, 2, cfg.data.resolution)
    assert record["settings"]["steps"] == 2 and record["settings"]["sigma"] == cfg.reference.sigma
    assert set(record["scores"]) == set(record["methods"]) == {"plain", "no_prior", "prior"}
    lpips = metrics["perceptual"]["lpips"]
    for method, row in record["scores"].items():
        assert all(math.isfinite(row[name]) for name in ("psnr_masked", "ssim_masked", "l1_masked")), method
        if lpips["available"]:
            assert math.isfinite(row["local_lpips"])
        else:   # no ImageNet weights in this test's torch cache: the reason, never a number
            assert row["local_lpips"] == lpips["reason"] and "missing" in row["local_lpips"]
        assert "seconds_per_image" not in row      # wall time: latency.json's
    seconds = json.loads((directory / "latency.json").read_text())["same_identity"]["seconds_per_image"]
    assert set(seconds) == set(record["scores"]) and all(value > 0 for value in seconds.values())

    report = (directory / "report.md").read_text()
    section = report.split("## Same identity (paper 001's synthetic test)")[1].split("\n## ")[0]
    assert all(description in section for description in record["methods"].values())
    assert "local_lpips" in section and "s/image" in section
    page = (directory / "report.html").read_text()
    assert "Same identity: plain inpainting, latent optimisation, reference-guided (paper 001)" in page
    assert record["methods"]["prior"].replace("'", "&#x27;") in page and "seconds/image" in page
    if not lpips["available"]:
        assert "Local LPIPS unavailable" in section and "Local LPIPS unavailable" in page

    client = MlflowClient(cfg.registry.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id],
                              "attributes.run_name = 'evaluate'")
    logged = runs[0].data.metrics
    for method, row in record["scores"].items():
        assert logged[f"same_identity.scores.{method}.psnr_masked"] == pytest.approx(row["psnr_masked"])


def test_per_image_scores_one_row_per_image_and_method(evaluated):
    cfg, directory, metrics = evaluated
    rows = _csv(directory / "per_image.csv")
    assert list(rows[0])[:5] == ["sample", "mask_ratio", "bin", "occluder", "method"]
    assert set(evaluate.METRICS) <= set(rows[0])
    assert len(rows) == metrics["test_samples"] * len(metrics["methods"])
    assert {row["bin"] for row in rows} == set(PAPER_BINS)
    ours = [float(row["psnr_masked"]) for row in rows if row["method"] == "end_to_end"]
    assert np.mean(ours) == pytest.approx(metrics["end_to_end"]["psnr_masked"], abs=1e-4)
    if not metrics["perceptual"]["lpips"]["available"]:
        assert "lpips" not in rows[0]


def test_gradcam_maps_per_class_for_the_fixed_samples(evaluated):
    cfg, directory, metrics = evaluated
    assert "gradcam" not in metrics
    gradcam = json.loads((directory / "gradcam" / "index.json").read_text())
    assert gradcam["classes"] == ["background", "face", "occluder"]
    assert len(gradcam["samples"]) == cfg.evaluation.grid_samples
    for sample in gradcam["samples"]:
        for label in gradcam["classes"]:
            assert (directory / "gradcam" / f"{sample}_{label}.png").is_file()
    sheet = np.asarray(Image.open(directory / "gradcam.png"))
    assert sheet.shape[0] == cfg.evaluation.grid_samples * cfg.data.resolution * 4 and sheet.std() > 0


def test_dvc_plots_show_draws_the_bins_on_a_numeric_axis(evaluated):
    cfg, _, _ = evaluated
    shown = subprocess.run([str(BIN / "dvc"), "plots", "show", "--json"], cwd=cfg.root, env=project_env(cfg.root),
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    plots = json.loads(shown.stdout)
    eval_errors = [e for e in plots.get("errors", []) if "reports/eval" in str(e.get("source"))]
    assert not eval_errors, eval_errors       # (no training ran here: its loss plots are missing)
    for name in ("psnr_by_mask_ratio", "ssim_by_mask_ratio", "l1_by_mask_ratio", "reports/eval/by_mask_ratio.csv"):
        spec = plots["data"][name][0]["content"]
        assert spec["encoding"]["x"]["field"] == "mask_ratio_percent", name
        assert spec["encoding"]["x"]["type"] == "quantitative", name
        values = spec["data"]["values"]
        assert sorted({float(v["mask_ratio_percent"]) for v in values}) == [5.5, 15.0, 25.0, 35.0, 45.0, 55.0]
        ys = [float(v.get("dvc_inferred_y_value", v["end_to_end.psnr_masked"])) for v in values]
        assert all(y == y for y in ys), name                                     # numbers, no NaN
    psnr = plots["data"]["psnr_by_mask_ratio"][0]["content"]["data"]["values"]
    assert {v["field"] for v in psnr} >= {"end_to_end.psnr_masked", "telea.psnr_masked", "navier_stokes.psnr_masked"}
    html = subprocess.run([str(BIN / "dvc"), "plots", "show", "-o", str(cfg.root / "dvc_plots")], cwd=cfg.root,
                          env=project_env(cfg.root), capture_output=True, text=True, timeout=300)
    assert html.returncode == 0 and (cfg.root / "dvc_plots/index.html").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (infra/install_chromium.sh)")
def test_the_html_report_opens_in_chromium_without_broken_images_empty_charts_or_errors(evaluated, tmp_path):
    _, directory, metrics = evaluated
    page = (directory / "report.html").read_text()
    assert "Table II" in page and "1%-10%" in page and "Grad-CAM" in page and "Navier-Stokes" in page
    assert "LPIPS unavailable" in page or metrics["perceptual"]["lpips"]["available"]
    assert not re.search(r'(src|href)="(https?:)?//', page)           # self-contained: nothing fetched
    check = check_page(directory / "report.html", tmp_path)
    assert check.problems == []
    assert check.images >= 2 and check.charts >= 6
    screenshot = np.asarray(Image.open(check.screenshot).convert("L"))
    assert screenshot.shape[0] > 500 and screenshot.std() > 5
