"""The evaluate stage on a tiny generated dataset with untrained networks: what it reports, not how well."""

import torch

from pipeline.config import load_config
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import create_model
from pipeline.stages import evaluate, generate
from pipeline.stages.common import Paths
from tests.conftest import TINY_ARCH_KWARGS, tiny_params, write_params

PAPER_BINS = ["1%-10%", "10%-20%", "20%-30%", "30%-40%", "40%-50%", "50%-60%"]


def _untrained(path, arch, task, resolution):
    torch.manual_seed(0)
    net = create_model(arch, task, **TINY_ARCH_KWARGS[arch])
    save_checkpoint(path, net, NetworkSettings(arch=arch, arch_kwargs=TINY_ARCH_KWARGS[arch], task=task,
                                               resolution=resolution, training_run_id="test"))


def test_evaluate_reports_every_bin_every_baseline_and_the_photograph_set(tmp_path):
    params = tiny_params({"data": {"mask_ratio_min": 0.01, "mask_ratio_max": 0.6},
                          "evaluation": {"mask_ratio_bins": [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}})
    cfg = load_config(write_params(tmp_path, params))
    generate.run(cfg)
    paths = Paths(cfg.root)
    resolution = cfg.data.resolution
    _untrained(paths.segmenter, "soclnet", "segmenter", resolution)
    _untrained(paths.inpainter, "ifacenet", "inpainter", resolution)
    _untrained(paths.finetuned_inpainter, "ifacenet", "inpainter", resolution)

    result = evaluate.evaluate(cfg)
    metrics = result["metrics"]
    for method in evaluate.METHODS:
        assert set(metrics[method]) == set(evaluate.METRICS), method
    assert {"iou", "miou", "iou_background", "iou_face", "iou_occluder"} <= set(metrics["segmentation"])

    bins = result["bins"]
    assert [row["mask_ratio_bin"] for row in bins] == PAPER_BINS
    assert all(row["samples"] >= 1 for row in bins)          # stratified: the 12 test samples fill all six
    for row in bins:
        for method in evaluate.METHODS:
            assert all(row[f"{method}.{name}"] is not None for name in evaluate.METRICS)

    photographs = metrics["photographs"]
    assert photographs["samples"] >= 10
    assert {"iou", "dice", "pixel_accuracy"} <= set(photographs["segmentation"])
    for method in ("end_to_end", "telea", "telea_gt_mask", "gt_mask", "occluded_input"):
        assert {"psnr_masked", "l1_masked", "ssim_masked"} <= set(photographs[method])
    assert len(metrics["checks"]) >= 8 and all(isinstance(ok, bool) for ok in metrics["checks"].values())

    report = evaluate.render_report(cfg, result, "samples.png")
    assert "## Photograph set" in report and "OpenCV Telea: ground-truth mask" in report
    assert all(name in report for name in PAPER_BINS)


def test_empty_bins_are_reported_with_no_scores():
    ratios = torch.tensor([0.05, 0.07])
    scores = {"m": {name: torch.tensor([1.0, 2.0]) for name in evaluate.METRICS}}
    rows = evaluate._bin_rows(scores, ratios, (0.0, 0.1, 0.2))
    assert [row["samples"] for row in rows] == [2, 0]
    assert rows[1]["m.psnr"] is None and rows[0]["m.psnr"] == 1.5
