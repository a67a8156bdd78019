"""The HTML report renderer on hand-made results, and the pages opened in headless Chromium."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.html_report import Champion, Figure, ReportInputs, line_chart, render_report
from tests.evaluation.browser import CHROMIUM, check_page

METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
METHODS = ("end_to_end", "gt_mask", "telea", "navier_stokes", "occluded_input")
LABELS = ["1%-10%", "10%-20%", "20%-30%"]


def _png(width: int = 64, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _results(offset: float = 0.0, lpips: bool = False) -> ReportInputs:
    metrics = {"test_samples": 6, "about": {"profile": "quick"},
               "methods": {m: f"method {m}" for m in METHODS},
               **{m: {k: 20.0 + offset + i for i, k in enumerate(METRICS)} for m in METHODS},
               "segmentation": {"iou": 0.9, "dice": 0.95, "pixel_accuracy": 0.99, "mask_ssim": 0.8},
               "perceptual": {"lpips": {"available": True, "net": "alex",
                                        "overall": {m: {"lpips": 0.1, "lpips_masked": 0.3} for m in METHODS}}
                              if lpips else {"available": False, "reason": "alexnet-owt-7be5be79.pth is missing"},
                              "fid": {"available": False, "reason": "inception weights are missing"}},
               "checks": {"a floor": True, "another floor": False}}
    bins = [{"mask_ratio_bin": label, "mask_ratio_percent": str(5 + 10 * n), "samples": "2",
             **{f"{m}.{k}": str(10.0 + offset + n + j) for j, m in enumerate(METHODS) for k in METRICS},
             **({f"{m}.{k}": "0.3" for m in METHODS for k in ("lpips", "lpips_masked")} if lpips else {})}
            for n, label in enumerate(LABELS)]
    return ReportInputs(metrics, bins, [Figure("samples", _png(), "a grid"), Figure("gradcam", _png(), "maps")])


def test_champion_beside_the_candidate_and_extra_sections():
    champion_results = _results(offset=100.0)
    champion = Champion("champion v7", champion_results.metrics, champion_results.bins, "same data")
    page = render_report(_results(), champion=champion, extra_sections=[("Promotion gate", "<p>challenger</p>")])
    assert "champion v7" in page and "same data" in page and "<h2>Promotion gate</h2><p>challenger</p>" in page
    assert "110.0000" in page and "10.0000" in page            # a bin's value of each, in the same cell
    assert page.index("Promotion gate") < page.index("Table II")
    assert "champion v7: end_to_end" in page                    # its line on the charts


def test_unavailable_metrics_are_said_so_never_numbers():
    page = render_report(_results())
    assert "LPIPS unavailable: alexnet-owt-7be5be79.pth is missing" in page
    assert "FID unavailable: inception weights are missing" in page
    assert "lpips by mask ratio" not in page
    available = render_report(_results(lpips=True))
    assert "lpips by mask ratio" in available and "LPIPS unavailable" not in available


def test_a_chart_without_values_is_not_drawn():
    assert line_chart("empty", LABELS, {"a": [None, None, None]}) == ""
    assert line_chart("one", LABELS, {"a": [1.0, None, 2.0]}).count('class="mark"') == 3   # a line and two points


def test_the_photograph_set_shows_its_objects_when_reported():
    results = _results()
    photographs = {"samples": 4, **{m: {k: 12.0 for k in METRICS} for m in METHODS}}
    results.metrics["photographs"] = photographs
    without = render_report(results)
    assert "Photograph set" in without and "By object" not in without
    photographs["by_object"] = {"card": {"samples": 4, "iou": 0.4242, "end_to_end.psnr_masked": 12.5,
                                         "telea.psnr_masked": 12.25, "occluded_input.psnr_masked": 9.0}}
    page = render_report(results)
    assert "By object" in page and "0.4242" in page and "12.2500" in page


chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (infra/install_chromium.sh)")


@chromium
def test_the_report_renders_in_chromium(tmp_path):
    champion_results = _results(offset=1.0)
    page = tmp_path / "report.html"
    page.write_text(render_report(_results(lpips=True), champion=Champion("champion v1", champion_results.metrics,
                                                                          champion_results.bins)))
    check = check_page(page, tmp_path)
    assert check.problems == []
    assert check.images == 2 and check.charts == 8
    assert np.asarray(Image.open(check.screenshot).convert("L")).std() > 5


@chromium
def test_the_comparison_page_renders_in_chromium(tmp_path):
    from pipeline.registry.pages import compare_page

    bins = {f"end_to_end.{m}": {"v1": [1.0, 2.0, 3.0], "v2": [1.5, 2.5, None]} for m in ("psnr_masked", "ssim")}
    page = tmp_path / "compare.html"
    page.write_text(compare_page("Comparison: v1 vs v2", ["v1", "v2"], [["finetune.lr", 0.001, 0.002]],
                                 [["end_to_end.psnr_masked", 20.0, 21.0, 1.0]],
                                 [("v2: psnr_masked", 1.0, 0.2, 1.8)], bins, LABELS))
    check = check_page(page, tmp_path)
    assert check.problems == [] and check.charts == 3


@chromium
def test_the_check_catches_a_broken_image_an_empty_chart_and_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body><img alt="lost" src="missing.png">'
                    '<svg aria-label="no data"><text>nothing</text></svg><script>undefinedCall();</script></body></html>')
    check = check_page(page, tmp_path)
    assert check.broken_images == ["lost"] and check.empty_charts == ["no data"]
    assert any("undefinedCall" in error for error in check.script_errors)
