"""Stage evaluate: the test split end to end, against Telea and against ground-truth masks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config
from pipeline.data.dataset import load_split
from pipeline.deocclusion import inpaint, predict_masks
from pipeline.evaluation.metrics import inpainting_metrics, segmentation_metrics
from pipeline.evaluation.report import markdown_table, save_grid, write_csv
from pipeline.evaluation.telea import telea_inpaint
from pipeline.models.checkpoint import load_checkpoint
from pipeline.registry.tracking import log_artifact, log_metrics
from pipeline.stages.common import Paths, seed_everything, stage_run, write_json, write_text

logger = logging.getLogger(__name__)

METHODS = {
    "end_to_end": "ours: predicted mask, fine-tuned inpainter",
    "before_finetune": "ours: predicted mask, inpainter before joint fine-tuning",
    "gt_mask": "ours: ground-truth mask, fine-tuned inpainter",
    "telea": "OpenCV Telea: predicted mask",
    "occluded_input": "occluded input, unchanged",
}


def _bin_rows(method_scores: dict[str, dict[str, torch.Tensor]], mask_ratio: torch.Tensor,
              edges: tuple[float, ...]) -> list[dict[str, Any]]:
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (mask_ratio >= low) & ((mask_ratio < high) | ((high == edges[-1]) & (mask_ratio <= high)))
        if not inside.any():
            continue
        row: dict[str, Any] = {"mask_ratio_bin": f"{low:.0%}-{high:.0%}", "samples": int(inside.sum())}
        for method, scores in method_scores.items():
            for name in ("psnr_masked", "ssim_masked", "l1_masked"):
                row[f"{method}.{name}"] = round(float(scores[name][inside].mean()), 5)
        rows.append(row)
    return rows


EVALUATION_BATCH = 32  # images per forward pass: bounds memory at the papers' resolutions


def evaluate(cfg: Config) -> dict[str, Any]:
    """Metrics of every method on the test split, plus the tensors the report's grid shows."""
    paths = Paths(cfg.root)
    test = load_split(paths.dataset, "test")
    segmenter, seg = load_checkpoint(paths.segmenter)
    finetuned, inp = load_checkpoint(paths.finetuned_inpainter)
    base_inpainter, _ = load_checkpoint(paths.inpainter)
    resolution = inp.resolution
    scores: dict[str, dict[str, list[torch.Tensor]]] = {method: {} for method in METHODS}
    segmentation: dict[str, list[torch.Tensor]] = {}
    grid: list[torch.Tensor] = []
    for part in test.chunks(EVALUATION_BATCH):
        predicted_mask = predict_masks(segmenter, part.occluded_image, seg.threshold, seg.resolution, seg.opening_kernel)
        outputs = {
            "end_to_end": inpaint(finetuned, part.occluded_image, predicted_mask, resolution),
            "before_finetune": inpaint(base_inpainter, part.occluded_image, predicted_mask, resolution),
            "gt_mask": inpaint(finetuned, part.occluded_image, part.occluder_mask, resolution),
            "telea": telea_inpaint(part.occluded_image, predicted_mask, cfg.evaluation.telea_radius),
            "occluded_input": part.occluded_image,
        }
        for method, output in outputs.items():
            for name, values in inpainting_metrics(output, part.clean_image, part.occluder_mask).items():
                scores[method].setdefault(name, []).append(values)
        for name, values in segmentation_metrics(predicted_mask, part.occluder_mask).items():
            segmentation.setdefault(name, []).append(values)
        if not grid:
            shown = slice(0, cfg.evaluation.grid_samples)
            grid = [part.occluded_image[shown], predicted_mask[shown], outputs["end_to_end"][shown], part.clean_image[shown]]
    per_image = {method: {name: torch.cat(values) for name, values in named.items()} for method, named in scores.items()}
    metrics: dict[str, Any] = {"test_samples": len(test),
                               "segmentation": {k: round(float(torch.cat(v).mean()), 5) for k, v in segmentation.items()}}
    for method, values in per_image.items():
        metrics[method] = {k: round(float(v.mean()), 5) for k, v in values.items()}
    return {"metrics": metrics, "bins": _bin_rows(per_image, test.mask_ratio, cfg.evaluation.mask_ratio_bins),
            "grid": grid, "architectures": {"segmenter": seg.arch, "inpainter": inp.arch}}


def render_report(cfg: Config, result: dict[str, Any], grid_name: str) -> str:
    metrics = result["metrics"]
    columns = ["l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked"]
    table = markdown_table(["method", *columns], [[METHODS[m], *[metrics[m][c] for c in columns]] for m in METHODS])
    segmentation = markdown_table(["IoU", "Dice", "pixel accuracy"],
                                  [[metrics["segmentation"][k] for k in ("iou", "dice", "pixel_accuracy")]])
    bins = result["bins"]
    bin_columns = ["end_to_end.psnr_masked", "telea.psnr_masked", "gt_mask.psnr_masked", "occluded_input.psnr_masked"]
    bin_table = markdown_table(["mask ratio", "samples", *bin_columns],
                               [[row["mask_ratio_bin"], row["samples"], *[row[c] for c in bin_columns]] for row in bins])
    architectures = result["architectures"]
    return f"""# De-occlusion evaluation

Profile `{cfg.profile}`. Test split: {metrics['test_samples']} samples at {cfg.data.resolution} px.
Segmenter `{architectures['segmenter']}`, inpainter `{architectures['inpainter']}` (fine-tuned on the
segmenter's masks); params hash `{cfg.params_hash[:12]}`.
Masked metrics are computed inside the ground-truth occluder; images are in [0, 1], PSNR in dB.

## Segmentation (predicted occluder mask vs ground truth)

{segmentation}

## Inpainting

{table}

## PSNR inside the occluder by mask ratio (paper 000's bins)

{bin_table}

## Samples

Columns: occluded input | predicted mask | de-occluded output | ground truth.

![samples]({grid_name})
"""


def run(cfg: Config) -> dict[str, Any]:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    result = evaluate(cfg)
    grid = save_grid(result["grid"], paths.evaluation / "samples.png")
    write_csv(result["bins"], paths.evaluation / "by_mask_ratio.csv")
    write_text(paths.evaluation / "report.md", render_report(cfg, result, grid.name))
    write_json(paths.evaluation / "metrics.json", result["metrics"])
    with stage_run(cfg, "evaluate", {"test_samples": result["metrics"]["test_samples"]}):
        log_metrics({f"{group}.{name}": value for group, values in result["metrics"].items()
                     if isinstance(values, dict) for name, value in values.items()})
        for name in ("report.md", "samples.png", "by_mask_ratio.csv", "metrics.json"):
            log_artifact(paths.evaluation / name, "evaluation")
    logger.info("evaluation report: %s", paths.evaluation / "report.md")
    return result["metrics"]


def metric_value(metrics: dict[str, Any], dotted: str, source: Path) -> float:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{source}: no metric '{dotted}'")
        value = value[part]
    return float(value)
