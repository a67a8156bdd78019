"""Stage evaluate: the test split end to end, against OpenCV Telea and Navier-Stokes and against
ground-truth masks, by mask-ratio bin (paper 000's Table II, LPIPS and FID when their weights are
cached) and by occluder type; the segmenter with and without its clean-up, and its Grad-CAM maps; the
deocclusion path's latency; the photograph set (real faces with pasted objects) beside it; paper
001's synthetic same-identity test (plain inpainting against latent optimisation without and with the
references' prior). Writes metrics.json, per-image scores, the bin table for DVC plots, and the HTML
report."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from pipeline.config import Config
from pipeline.data.dataset import SplitFiles, SplitTensors, image_to_tensor, load_split
from pipeline.data.photographs import build_photograph_set
from pipeline.deocclusion import (Deoccluder, ProgressiveReconstruction, inpaint, mask_at, mask_from_probability,
                                  network_device, occluder_probability, progressive_steps, resize)
from pipeline.evaluation.bins import bin_index, bin_labels, mask_ratio_bins
from pipeline.evaluation.gradcam import grad_cam, overlay
from pipeline.evaluation.html_report import (LATENCY_FILE, PHOTOGRAPH_OBJECT_COLUMNS, Champion, read_bins,
                                             render_report_from_dir)
from pipeline.evaluation.metrics import (class_confusion, class_scores, inpainting_metrics, mask_ssim,
                                         segmentation_metrics)
from pipeline.evaluation.perceptual import FidScorer, LpipsScorer, Unavailable, load_fid, load_lpips
from pipeline.evaluation.report import markdown_table, save_grid, write_csv
from pipeline.evaluation.same_identity import (MASK_RATIOS, build_same_identity_test, method_settings,
                                               score_same_identity)
from pipeline.evaluation.same_identity import METHODS as SAME_IDENTITY_METHODS
from pipeline.evaluation.same_identity import SCORES as SAME_IDENTITY_SCORES
from pipeline.evaluation.telea import navier_stokes_inpaint, telea_inpaint
from pipeline.evaluation.timing import latency_record, timed
from pipeline.models.checkpoint import load_checkpoint, load_discriminator
from pipeline.reference import ReferenceGuidanceError, check_invertible
from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL, champion_version, download_run_file, version_record
from pipeline.registry.tracking import log_artifact, log_metrics
from pipeline.stages.common import (Paths, data_version, flat_metrics, seed_everything, stage_run, write_json,
                                    write_text)

logger = logging.getLogger(__name__)

METHODS = {
    "end_to_end": "ours: predicted mask, fine-tuned inpainter",
    "before_finetune": "ours: predicted mask, inpainter before joint fine-tuning",
    "gt_mask": "ours: ground-truth mask, fine-tuned inpainter",
    "telea": "OpenCV Telea: predicted mask",
    "telea_gt_mask": "OpenCV Telea: ground-truth mask",
    "navier_stokes": "OpenCV Navier-Stokes: predicted mask",
    "navier_stokes_gt_mask": "OpenCV Navier-Stokes: ground-truth mask",
    "occluded_input": "occluded input, unchanged",
}
# With evaluation.progressive: the fine-tuned inpainter again, through paper 004's Algorithm 1.
PROGRESSIVE_METHODS = {
    "end_to_end_progressive": "ours + progressive reconstruction (paper 004): predicted mask",
    "gt_mask_progressive": "ours + progressive reconstruction (paper 004): ground-truth mask",
}
METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
LPIPS_METRICS = ("lpips", "lpips_masked")
FID_METHODS = ("end_to_end", "gt_mask", "telea", "navier_stokes")   # FID per bin costs an Inception pass per image
OCCLUDER_METHODS = ("end_to_end", "gt_mask", "telea", "navier_stokes", "occluded_input")
CLASSES = ("background", "face", "occluder")
LOWER_IS_BETTER = {"l1", "l1_masked"}


@dataclass
class Models:
    segmenter: nn.Module
    finetuned: nn.Module
    base_inpainter: nn.Module
    seg: Any        # the segmenter's checkpoint settings
    inp: Any        # the inpainter's


@dataclass
class Perceptual:
    lpips: LpipsScorer | Unavailable
    fid: FidScorer | Unavailable


def _segment(models: Models, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, 3, H, W) -> the occluder's probability (N, 1, h, w) at the segmenter's resolution and, for a
    three-class segmenter (SOCLNET), the class probabilities (N, 3, h, w), None for an occluder-only one;
    with `test_time_flip` both averaged with the mirror image's, as `predict_masks` does. One pass (two
    with the flip) serves every mask variant and the face labels."""
    images = images.to(next(models.segmenter.parameters()).device)
    resolution = models.seg.resolution
    model_input = resize(images, (resolution, resolution)) if resolution else images
    with torch.no_grad():
        logits = models.segmenter(model_input).float()
        mirrored = models.segmenter(model_input.flip(-1)).float().flip(-1) if models.seg.test_time_flip else None
    occluder = occluder_probability(models.segmenter, model_input, models.seg.test_time_flip, logits, mirrored)
    if logits.shape[1] != len(CLASSES):
        return occluder, None
    classes = logits.softmax(dim=1)
    if mirrored is not None:
        classes = (classes + mirrored.softmax(dim=1)) / 2
    return occluder, classes


def _face_labels(class_probability: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """(N, 3, h, w) class probabilities -> (N, *size) background (0) / face (1), the likelier of the two;
    the occluder class then comes from the thresholded mask. None for an occluder-only segmenter."""
    if class_probability is None:
        return None
    return resize(class_probability, size)[:, :2].argmax(dim=1).cpu()


def cleanup_variants(configured: int, cleanup_kernel: int) -> dict[str, int]:
    """The segmentation variants scored: no clean-up, and paper 003's opening (the configured one first)."""
    variants = {"none": 0, f"opening_{cleanup_kernel}": cleanup_kernel}
    if configured > 1:
        variants[f"opening_{configured}"] = configured
    return variants


def _outputs(models: Models, part: SplitTensors, predicted_mask: torch.Tensor, telea_radius: int,
             progressive: ProgressiveReconstruction | None = None, seconds: dict[str, float] | None = None
             ) -> dict[str, torch.Tensor]:
    """Every method's output; with `progressive`, also the fine-tuned inpainter through Algorithm 1,
    and the wall time of the inpainting calls it is compared with added to `seconds`."""
    resolution = models.inp.resolution
    masks = {"end_to_end": predicted_mask, "gt_mask": part.occluder_mask}
    ours: dict[str, torch.Tensor] = {}
    device = next(models.finetuned.parameters()).device
    for method, mask in masks.items():
        one_shot = partial(inpaint, models.finetuned, part.occluded_image, mask, resolution)
        ours[method], plain = timed(one_shot, device)
        if progressive is not None and seconds is not None:
            ours[f"{method}_progressive"], slow = timed(partial(one_shot, progressive=progressive), device)
            seconds[method] = seconds.get(method, 0.0) + plain
            seconds[f"{method}_progressive"] = seconds.get(f"{method}_progressive", 0.0) + slow
    return {
        "end_to_end": ours.pop("end_to_end"),
        "before_finetune": inpaint(models.base_inpainter, part.occluded_image, predicted_mask, resolution),
        "gt_mask": ours.pop("gt_mask"),
        "telea": telea_inpaint(part.occluded_image, predicted_mask, telea_radius),
        "telea_gt_mask": telea_inpaint(part.occluded_image, part.occluder_mask, telea_radius),
        "navier_stokes": navier_stokes_inpaint(part.occluded_image, predicted_mask, telea_radius),
        "navier_stokes_gt_mask": navier_stokes_inpaint(part.occluded_image, part.occluder_mask, telea_radius),
        "occluded_input": part.occluded_image,
        **ours,
    }


def _score(models: Models, split: SplitFiles | SplitTensors, batch_size: int, telea_radius: int,
           shown: list[int], cleanup_kernel: int = 0, perceptual: Perceptual | None = None,
           progressive: ProgressiveReconstruction | None = None) -> dict[str, Any]:
    """Per-image scores of every method on one split, segmentation with and without clean-up (pooled
    class confusion for a three-class segmenter), FID sets, and the rows `shown` for a grid. With
    `progressive`: the progressive methods too, Algorithm 1's predictions per image and the seconds
    the one-shot and the progressive inpainting took."""
    methods = {**METHODS, **(PROGRESSIVE_METHODS if progressive is not None else {})}
    scores: dict[str, dict[str, list[torch.Tensor]]] = {method: {} for method in methods}
    seconds: dict[str, float] = {}
    steps: dict[str, list[torch.Tensor]] = {"end_to_end": [], "gt_mask": []}
    variants = cleanup_variants(models.seg.opening_kernel, cleanup_kernel) if cleanup_kernel else {}
    segmentation: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in ("configured", *variants)}
    confusion = {name: torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.float64) for name in segmentation}
    lpips = perceptual.lpips if perceptual and isinstance(perceptual.lpips, LpipsScorer) else None
    keep_for_fid = perceptual is not None and isinstance(perceptual.fid, FidScorer)
    fid_sets: dict[str, list[torch.Tensor]] = {name: [] for name in (*FID_METHODS, "clean")} if keep_for_fid else {}
    grid: list[list[torch.Tensor]] = [[], [], [], []]
    for start in range(0, len(split), batch_size):
        part = split.select(start, start + batch_size)
        occluder, class_probability = _segment(models, part.occluded_image)
        size = tuple(part.occluded_image.shape[-2:])
        kernels = {"configured": models.seg.opening_kernel, **variants}
        masks = {name: mask_from_probability(occluder, models.seg.threshold, kernel, size).cpu()
                 for name, kernel in kernels.items()}
        predicted_mask = masks["configured"]
        face = _face_labels(class_probability, size)
        outputs = _outputs(models, part, predicted_mask, telea_radius, progressive, seconds)
        if progressive is not None:
            for method, mask in (("end_to_end", predicted_mask), ("gt_mask", part.occluder_mask)):
                steps[method].append(progressive_steps(mask_at(mask, models.inp.resolution), progressive))
        for method, output in outputs.items():
            values = inpainting_metrics(output, part.clean_image, part.occluder_mask)
            if lpips is not None:
                values.update(lpips=lpips(output, part.clean_image), lpips_masked=lpips(output, part.clean_image,
                                                                                         part.occluder_mask))
            for name, value in values.items():
                scores[method].setdefault(name, []).append(value)
        for method in fid_sets:
            image = part.clean_image if method == "clean" else outputs[method]
            fid_sets[method].append((image.clamp(0, 1) * 255).round().byte())
        for variant, mask in masks.items():
            values = {**segmentation_metrics(mask, part.occluder_mask), "mask_ssim": mask_ssim(mask, part.occluder_mask)}
            for name, value in values.items():
                segmentation[variant].setdefault(name, []).append(value)
            if face is not None:
                labels = torch.where(mask[:, 0] > 0, len(CLASSES) - 1, face)
                confusion[variant] += class_confusion(labels, part.label_map, len(CLASSES))
        rows = [index - start for index in shown if start <= index < start + len(part)]
        for column, tensor in enumerate((part.occluded_image, predicted_mask, outputs["end_to_end"], part.clean_image)):
            grid[column].extend(tensor[row] for row in rows)
    return {"per_image": {m: {k: torch.cat(v) for k, v in named.items()} for m, named in scores.items()},
            "segmentation": {variant: {k: torch.cat(v) for k, v in named.items()} for variant, named in segmentation.items()},
            "confusion": confusion if face is not None else None,
            "fid_sets": {m: torch.cat(v) for m, v in fid_sets.items()},
            "grid": [torch.stack(column) for column in grid] if grid[0] else [],
            "progressive": None if progressive is None else {"seconds": seconds,
                                                             "steps": {m: torch.cat(v) for m, v in steps.items()}}}


def _mean(values: torch.Tensor) -> float:
    return round(float(values.mean()), 5)


def _segmentation_summary(per_image: dict[str, torch.Tensor], confusion: torch.Tensor | None) -> dict[str, float]:
    """Per-image means of the occluder mask's IoU, Dice, pixel accuracy, mask SSIM; with three classes,
    paper 000's pooled IoU and Dice per class (over all test pixels), their means and pixel accuracy."""
    summary = {k: _mean(v) for k, v in per_image.items()}
    if confusion is not None:
        pooled = class_scores(confusion)
        summary.update({f"iou_{name}": round(float(v), 5) for name, v in zip(CLASSES, pooled["iou"])})
        summary["miou"] = round(float(pooled["iou"].mean()), 5)
        summary.update({f"dice_{name}": round(float(v), 5) for name, v in zip(CLASSES, pooled["dice"])})
        summary["mean_dice"] = round(float(pooled["dice"].mean()), 5)
        summary["pixel_accuracy_classes"] = round(float(pooled["pixel_accuracy"]), 5)
    return summary


def _summary(scored: dict[str, Any], samples: int) -> dict[str, Any]:
    confusion = scored["confusion"] or {}
    summary: dict[str, Any] = {"samples": samples, "segmentation": _segmentation_summary(
        scored["segmentation"]["configured"], confusion.get("configured"))}
    for method, values in scored["per_image"].items():
        summary[method] = {k: _mean(values[k]) for k in METRICS}
    cleanup = {variant: _segmentation_summary(values, confusion.get(variant))
               for variant, values in scored["segmentation"].items() if variant != "configured"}
    if cleanup:
        summary["segmentation_cleanup"] = cleanup
    return summary


def _bin_rows(method_scores: dict[str, dict[str, torch.Tensor]], mask_ratio: torch.Tensor,
              edges: tuple[float, ...], fid: dict[str, list[float | None]] | None = None) -> list[dict[str, Any]]:
    """One row per bin of `edges` (every bin, empty ones with no scores), every method and metric; the
    label and a numeric midpoint (percent) for plots."""
    rows = []
    index = bin_index(mask_ratio, edges)
    for number, bin_ in enumerate(mask_ratio_bins(edges)):
        inside = index == number
        row: dict[str, Any] = {"mask_ratio_bin": bin_.label, "mask_ratio_percent": bin_.midpoint_percent,
                               "samples": int(inside.sum())}
        for method, scores in method_scores.items():
            for name in (*METRICS, *LPIPS_METRICS):
                if name in scores:
                    row[f"{method}.{name}"] = round(float(scores[name][inside].mean()), 5) if inside.any() else None
            if fid and method in fid:
                row[f"{method}.fid"] = None if fid[method][number] is None else round(fid[method][number], 4)
        rows.append(row)
    return rows


def quality_checks(metrics: dict[str, Any], bins: list[dict[str, Any]]) -> dict[str, bool]:
    """Issue 9's floors on these results, each named (the benchmark script prints them)."""
    def better(name: str, ours: float | None, other: float | None) -> bool:
        if ours is None or other is None:
            return False
        return ours < other if name in LOWER_IS_BETTER else ours > other

    checks = {"segmentation.iou >= 0.85": metrics["segmentation"]["iou"] >= 0.85,
              "gt_mask.psnr_masked >= telea_gt_mask.psnr_masked + 3":
                  metrics["gt_mask"]["psnr_masked"] >= metrics["telea_gt_mask"]["psnr_masked"] + 3}
    for baseline in ("occluded_input", "telea"):
        checks[f"end_to_end beats {baseline} on all six metrics, overall"] = all(
            better(name, metrics["end_to_end"][name], metrics[baseline][name]) for name in METRICS)
        checks[f"end_to_end beats {baseline} on all six metrics, every bin"] = all(
            better(name, row[f"end_to_end.{name}"], row[f"{baseline}.{name}"]) for row in bins for name in METRICS)
    checks["every bin holds >= 8 test samples"] = all(row["samples"] >= 8 for row in bins)
    photographs = metrics["photographs"]
    checks["photographs: segmentation.iou >= 0.5"] = photographs["segmentation"]["iou"] >= 0.5
    checks["photographs: end_to_end beats occluded_input inside the object"] = all(
        better(name, photographs["end_to_end"][name], photographs["occluded_input"][name])
        for name in ("l1_masked", "psnr_masked", "ssim_masked"))
    return checks


def _spread(mask_ratio: torch.Tensor, count: int) -> list[int]:
    """`count` sample indices spread over the range of mask ratios, smallest first."""
    order = torch.argsort(mask_ratio).tolist()
    picks = np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)
    return sorted({order[p] for p in picks}, key=lambda i: float(mask_ratio[i]))


def photograph_split(resolution: int, seed: int) -> SplitTensors:
    samples = build_photograph_set(resolution, seed)
    return SplitTensors(
        ids=[f"photo{index:03d}" for index in range(len(samples))],
        occluded_image=torch.stack([image_to_tensor(s.occluded_image) for s in samples]),
        clean_image=torch.stack([image_to_tensor(s.clean_image) for s in samples]),
        occluder_mask=torch.stack([torch.from_numpy(s.occluder_mask > 127).float()[None] for s in samples]),
        label_map=torch.stack([torch.from_numpy(s.label_map) for s in samples]),
        mask_ratio=torch.tensor([s.mask_ratio for s in samples]),
        occluder_type=[s.occluder_type for s in samples],
    )


def _perceptual_record(perceptual: Perceptual, per_image: dict[str, dict[str, torch.Tensor]],
                       fid_overall: dict[str, float | None] | None) -> dict[str, Any]:
    """LPIPS and FID over the whole test split, or why they are not there."""
    record: dict[str, Any] = {}
    if isinstance(perceptual.lpips, LpipsScorer):
        record["lpips"] = {"available": True, "net": perceptual.lpips.net,
                           "overall": {m: {k: _mean(v[k]) for k in LPIPS_METRICS} for m, v in per_image.items()}}
    else:
        record["lpips"] = perceptual.lpips.record()
    if isinstance(perceptual.fid, FidScorer) and fid_overall is not None:
        record["fid"] = {"available": True, "note": "Inception V3 pool features; biased upward on few images",
                         "overall": {m: {"fid": None if v is None else round(v, 4)} for m, v in fid_overall.items()}}
    else:
        record["fid"] = perceptual.fid.record() if isinstance(perceptual.fid, Unavailable) else {
            "available": False, "reason": "not computed"}
    return record


def _fid(scorer: FidScorer, sets: dict[str, torch.Tensor], groups: list[torch.Tensor]
         ) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """FID of each method against the clean images, overall and in each group (bin) of indices."""
    real = sets["clean"].float() / 255
    overall, by_group = {}, {}
    for method in FID_METHODS:
        generated = sets[method].float() / 255
        overall[method] = scorer(generated, real)
        by_group[method] = [scorer(generated[index], real[index]) for index in groups]
    return overall, by_group


def progressive_record(settings: ProgressiveReconstruction, steps: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Algorithm 1's settings and the predictions it made per image, for metrics.json."""
    return {"kernel": settings.kernel, "min_hole_ratio": settings.min_hole_ratio, "max_steps": settings.max_steps,
            "mean_steps": {m: round(float(v.float().mean()), 4) for m, v in steps.items()},
            "most_steps": {m: int(v.max()) for m, v in steps.items()},
            "methods": {f"{m}_progressive": m for m in steps}}


def progressive_latency(seconds: dict[str, float], images: int, batch_size: int) -> dict[str, Any]:
    """ms per image of the inpainter alone, one-shot and progressive, over the whole test split (the
    paper's Table 3 measures prediction alone too), for latency.json."""
    per_image = {method: round(1000 * total / images, 3) for method, total in seconds.items()}
    return {"note": f"inpainter only, batches of {batch_size}, mean over the {images} test images; "
                    "paper 004 (1080Ti, 256 px): 52.69 ms one-shot, 85.46 ms progressive",
            "ms_per_image": per_image,
            "slowdown": {method: round(per_image[f"{method}_progressive"] / per_image[method], 3)
                         for method in ("end_to_end", "gt_mask") if per_image.get(method)}}


def _by_occluder(per_image: dict[str, dict[str, torch.Tensor]], occluder_type: list[str]) -> dict[str, Any]:
    """Mean scores per occluder type, for the methods worth comparing."""
    types = np.array(occluder_type)
    grouped: dict[str, Any] = {}
    for kind in sorted(set(occluder_type)):
        inside = torch.from_numpy(types == kind)
        grouped[kind] = {method: {"samples": int(inside.sum()),
                                  **{k: _mean(per_image[method][k][inside]) for k in METRICS}}
                         for method in OCCLUDER_METHODS}
    return grouped


def _photographs_by_object(scored: dict[str, Any], occluder_type: list[str]) -> dict[str, Any]:
    """The photograph set per object fill (`face/fill/variant`: photo, skin, plain, card): the mask's
    IoU and the PSNR inside the object of ours, Telea on our mask and the input."""
    fills = np.array([kind.split("/")[1] for kind in occluder_type])
    iou = scored["segmentation"]["configured"]["iou"]
    grouped: dict[str, Any] = {}
    for fill in sorted(set(fills.tolist())):
        inside = torch.from_numpy(fills == fill)
        grouped[fill] = {"samples": int(inside.sum()), "iou": _mean(iou[inside]),
                         **{f"{method}.psnr_masked": _mean(scored["per_image"][method]["psnr_masked"][inside])
                            for method in ("end_to_end", "telea", "occluded_input")}}
    return grouped


def per_image_rows(per_image: dict[str, dict[str, torch.Tensor]], split: SplitFiles | SplitTensors,
                   edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """One row per (image, method): the image's id, mask ratio, bin, occluder type and every metric."""
    labels = bin_labels(split.mask_ratio, edges)
    rows = []
    for index, sample in enumerate(split.ids):
        for method, scores in per_image.items():
            rows.append({"sample": sample, "mask_ratio": round(float(split.mask_ratio[index]), 6), "bin": labels[index],
                         "occluder": split.occluder_type[index], "method": method,
                         **{name: float(values[index]) for name, values in scores.items()}})
    return rows


def same_identity_test(cfg: Config, models: Models, lpips: LpipsScorer | Unavailable
                       ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Paper 001's same-identity test on the fine-tuned inpainter: its record for metrics.json (the
    scores, the settings, or why it was skipped) and the seconds per image for latency.json (None when
    skipped); None when evaluation.same_identity_people is 0."""
    settings = cfg.evaluation
    if settings.same_identity_people == 0:
        return None
    record: dict[str, Any] = {"people": settings.same_identity_people, "references": settings.same_identity_references,
                              "resolution": cfg.data.resolution, "mask_ratios": list(MASK_RATIOS),
                              "methods": dict(SAME_IDENTITY_METHODS)}
    try:
        check_invertible(models.finetuned)
    except ReferenceGuidanceError as error:
        logger.warning("same-identity test skipped: %s", error)
        return {**record, "skipped": str(error)}, None
    test = build_same_identity_test(cfg.seed, settings.same_identity_people, settings.same_identity_references,
                                    cfg.data.resolution, cfg.data.occluders)
    # The fine-tuned inpainter ships without its discriminator: the realism term is off unless one is there.
    realism = models.inp.adversarial and cfg.reference.discriminator_weight > 0
    discriminator = load_discriminator(Paths(cfg.root).finetuned_inpainter) if realism else None
    rows = score_same_identity(models.finetuned, test, cfg.reference, lpips, settings.same_identity_steps,
                               models.inp.resolution, discriminator)
    used = asdict(method_settings(cfg.reference, settings.same_identity_steps)["prior"])
    record["settings"] = {name: list(value) if isinstance(value, tuple) else value for name, value in used.items()}
    record["realism_term"] = realism
    record["scores"] = {method: {k: v for k, v in row.items() if k != "seconds_per_image"} for method, row in rows.items()}
    timing = {"note": f"seconds per image, mean over the {len(test)} people, on {network_device(models.finetuned)}",
              "seconds_per_image": {method: row["seconds_per_image"] for method, row in rows.items()}}
    return record, timing


def evaluation_device(cfg: Config) -> torch.device:
    if cfg.evaluation.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.evaluation.device)


def evaluate(cfg: Config) -> dict[str, Any]:
    """Metrics of every method on the test split and on the photograph set, per-image scores, the
    grid's tensors, the Grad-CAM maps of the grid's samples and the deocclusion path's latency."""
    paths = Paths(cfg.root)
    settings = cfg.evaluation
    test = load_split(paths.dataset, "test")
    segmenter, seg = load_checkpoint(paths.segmenter)
    finetuned, inp = load_checkpoint(paths.finetuned_inpainter)
    base_inpainter, _ = load_checkpoint(paths.inpainter)
    device = evaluation_device(cfg)
    # The networks run on the configured device; inputs move there batch by batch, results come back.
    models = Models(segmenter.to(device), finetuned.to(device), base_inpainter.to(device), seg, inp)
    perceptual = Perceptual(load_lpips(settings.lpips_net, device), load_fid(device))
    for missing in (p for p in (perceptual.lpips, perceptual.fid) if isinstance(p, Unavailable)):
        logger.warning("%s unavailable: %s", missing.metric.upper(), missing.reason)
    batch_size, radius, edges = settings.batch_size, settings.telea_radius, settings.mask_ratio_bins

    shown = _spread(test.mask_ratio, settings.grid_samples)
    progressive = (ProgressiveReconstruction(settings.progressive_kernel, settings.progressive_min_hole_ratio,
                                             settings.progressive_max_steps) if settings.progressive else None)
    if progressive is not None:   # one untimed pass first: the timed ones then compare like with like
        first = test.select(0, 1)
        inpaint(models.finetuned, first.occluded_image, first.occluder_mask, inp.resolution)
    scored = _score(models, test, batch_size, radius, shown, settings.cleanup_kernel, perceptual, progressive)
    methods = {**METHODS, **(PROGRESSIVE_METHODS if progressive is not None else {})}
    metrics: dict[str, Any] = {
        # No params hash: it moves with every param, display ones included, and `register` reads this file.
        "about": {"profile": cfg.profile, "segmenter": seg.arch, "inpainter": inp.arch,
                  "resolution": cfg.data.resolution},
        "methods": methods, "test_samples": len(test), **_summary(scored, len(test))}
    if progressive is not None:
        metrics["progressive"] = progressive_record(progressive, scored["progressive"]["steps"])
    del metrics["samples"]
    fid_overall = fid_bins = None
    if isinstance(perceptual.fid, FidScorer):
        index = bin_index(test.mask_ratio, edges)
        fid_overall, fid_bins = _fid(perceptual.fid, scored["fid_sets"],
                                     [torch.nonzero(index == n)[:, 0] for n in range(len(edges) - 1)])
    bins = _bin_rows(scored["per_image"], test.mask_ratio, edges, fid_bins)
    metrics["perceptual"] = _perceptual_record(perceptual, scored["per_image"], fid_overall)
    metrics["by_occluder"] = _by_occluder(scored["per_image"], test.occluder_type)

    # The photograph set's face has no annotated outline: only the occluder metrics are meaningful.
    photos = photograph_split(cfg.data.resolution, cfg.seed)
    photo_scored = _score(models, photos, batch_size, radius, _spread(photos.mask_ratio, settings.grid_samples))
    photo_scored["confusion"] = None
    metrics["photographs"] = _summary(photo_scored, len(photos))
    metrics["photographs"]["by_object"] = _photographs_by_object(photo_scored, photos.occluder_type)
    metrics["checks"] = quality_checks(metrics, bins)

    shown_images = scored["grid"][0] if scored["grid"] else test.select(0, 1).occluded_image
    cams = grad_cam(models.segmenter, shown_images, seg.resolution)
    classes = list(CLASSES) if cams.shape[1] == len(CLASSES) else ["occluder"]
    metrics["gradcam"] = {"samples": [test.ids[i] for i in shown], "classes": classes}
    deoccluder = Deoccluder.from_settings(models.segmenter, seg, models.finetuned, inp)
    metrics["latency"] = latency_record(deoccluder, test.select(0, max(settings.latency_batch_sizes)).occluded_image,
                                        settings.latency_batch_sizes, settings.latency_repeats)
    if progressive is not None:
        metrics["latency"]["progressive"] = progressive_latency(scored["progressive"]["seconds"], len(test), batch_size)
    same_identity = same_identity_test(cfg, models, perceptual.lpips)
    if same_identity is not None:
        metrics["same_identity"], timing = same_identity
        if timing:
            metrics["latency"]["same_identity"] = timing
    return {"metrics": metrics, "bins": bins, "per_image": per_image_rows(scored["per_image"], test, edges),
            "grid": scored["grid"], "photograph_grid": photo_scored["grid"],
            "gradcam": {"images": shown_images, "maps": cams, "samples": metrics["gradcam"]["samples"],
                        "classes": classes},
            "architectures": {"segmenter": seg.arch, "inpainter": inp.arch}}


def _method_table(metrics: dict[str, Any], methods: dict[str, str]) -> str:
    return markdown_table(["method", *METRICS], [[methods[m], *[metrics[m][c] for c in METRICS]] for m in methods])


def _cell(value: Any) -> Any:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else value


PROGRESSIVE_REPORT_METRICS = ("psnr_masked", "ssim_masked", "l1_masked")


def progressive_section(metrics: dict[str, Any], bins: list[dict[str, Any]]) -> str:
    """Markdown: one-shot against progressive reconstruction per bin, and their ms per image."""
    record = metrics.get("progressive")
    if not record:
        return ""
    columns = [(method, name) for name in PROGRESSIVE_REPORT_METRICS for method in ("gt_mask", "gt_mask_progressive",
                                                                                     "end_to_end", "end_to_end_progressive")]
    header = ["mask ratio", "samples", *[f"{method} {name}" for method, name in columns]]
    rows = [[row["mask_ratio_bin"], row["samples"], *[_cell(row.get(f"{m}.{n}")) for m, n in columns]] for row in bins]
    rows.append(["overall", metrics["test_samples"], *[metrics[m][n] for m, n in columns]])
    latency = (metrics.get("latency") or {}).get("progressive")
    timing = ""
    if latency:
        per_image = latency["ms_per_image"]
        timing = "\n\n" + markdown_table(
            ["mask", "one-shot ms/image", "progressive ms/image", "slowdown", "mean predictions/image"],
            [[m, per_image.get(m), per_image.get(f"{m}_progressive"), latency["slowdown"].get(m),
              record["mean_steps"][m]] for m in ("gt_mask", "end_to_end")]) + f"\n\n{latency['note']}."
    return f"""## Progressive reconstruction (paper 004, Algorithm 1)

The fine-tuned inpainter one-shot and with progressive reconstruction: dilation kernel
{record['kernel']}, predicting again while the hole covers >= {record['min_hole_ratio']:.0%} of the image,
at most {record['max_steps']} predictions. `gt_mask`: ground-truth mask; `end_to_end`: predicted mask.

{markdown_table(header, rows)}{timing}
"""


SAME_IDENTITY_ABOUT = ("Synthetic people rendered several times: view 0 occluded, views 1..K clean as the "
                       "person's references; it measures what the references add inside the occluder, the "
                       "fine-tuned inpainter alone against its latent optimised without and with their prior "
                       "(paper 001's enc, baseline and prior).")


def same_identity_section(metrics: dict[str, Any]) -> str:
    """Markdown: the same-identity test's rows with their seconds per image, or why it was skipped."""
    record = metrics.get("same_identity")
    if not record:
        return ""
    heading = "## Same identity (paper 001's synthetic test)\n\n" + SAME_IDENTITY_ABOUT
    if "skipped" in record:
        return f"{heading}\n\nSkipped: {record['skipped']}.\n"
    seconds = ((metrics.get("latency") or {}).get("same_identity") or {}).get("seconds_per_image", {})
    lpips_reason = next((row["local_lpips"] for row in record["scores"].values() if isinstance(row["local_lpips"], str)),
                        None)
    rows = [[record["methods"][method], *[row[k] for k in SAME_IDENTITY_SCORES],
             "unavailable" if lpips_reason else row["local_lpips"], _cell(seconds.get(method))]
            for method, row in record["scores"].items()]
    table = markdown_table(["method", *SAME_IDENTITY_SCORES, "local_lpips", "s/image"], rows)
    steps, ratios = record["settings"]["steps"], record["mask_ratios"]
    about = (f"{record['people']} people at {record['resolution']} px, {record['references']} references each, "
             f"occluders over {ratios[0]:.0%}-{ratios[1]:.0%} of the image; {steps} Adam steps per image. "
             "Scores inside the ground-truth occluder.")
    missing = f"\n\nLocal LPIPS unavailable: {lpips_reason}." if lpips_reason else ""
    return f"{heading}\n\n{about}\n\n{table}{missing}\n"


def render_report(cfg: Config, result: dict[str, Any], grid_name: str) -> str:
    metrics = result["metrics"]
    segmentation = metrics["segmentation"]
    seg_columns = [k for k in ("iou", "miou", "iou_background", "iou_face", "iou_occluder", "dice", "pixel_accuracy")
                   if k in segmentation]
    segmentation_table = markdown_table(seg_columns, [[segmentation[k] for k in seg_columns]])
    bins = result["bins"]
    bin_sections = []
    for name in METRICS:
        columns = [f"{method}.{name}" for method in METHODS]
        table = markdown_table(["mask ratio", "samples", *METHODS],
                               [[row["mask_ratio_bin"], row["samples"], *[_cell(row[c]) for c in columns]] for row in bins])
        bin_sections.append(f"### {name}\n\n{table}")
    photographs = metrics["photographs"]
    photo_methods = {m: METHODS[m] for m in ("end_to_end", "gt_mask", "telea", "telea_gt_mask", "occluded_input")}
    photo_seg = markdown_table(["IoU", "Dice", "pixel accuracy"],
                               [[photographs["segmentation"][k] for k in ("iou", "dice", "pixel_accuracy")]])
    photo_objects = markdown_table(["object", *PHOTOGRAPH_OBJECT_COLUMNS],
                                   [[fill, *[row[c] for c in PHOTOGRAPH_OBJECT_COLUMNS]]
                                    for fill, row in photographs["by_object"].items()])
    checks = "\n".join(f"- [{'x' if ok else ' '}] {name}" for name, ok in metrics["checks"].items())
    architectures = result["architectures"]
    bin_text = "\n\n".join(bin_sections)
    return f"""# De-occlusion evaluation

Profile `{cfg.profile}`. Test split: {metrics['test_samples']} samples at {cfg.data.resolution} px.
Segmenter `{architectures['segmenter']}`, inpainter `{architectures['inpainter']}` (fine-tuned on the
segmenter's masks); params hash `{cfg.params_hash[:12]}`.
Masked metrics are computed inside the ground-truth occluder; images are in [0, 1], PSNR in dB, L1
lower is better. mIoU: per class over all test pixels, the mean over background, face, occluder;
IoU: the occluder's, per image, averaged.

## Segmentation (predicted occluder mask vs ground truth)

{segmentation_table}

## Inpainting

{_method_table(metrics, METHODS)}

## By mask ratio (paper 000's bins)

{bin_text}

{progressive_section(metrics, bins)}

{same_identity_section(metrics)}

## Photograph set

{photographs['samples']} real face photographs that installed packages ship (astronaut, Grace
Hopper, cameraman), each with one object pasted on (the exact mask known); none is a training
texture. Masked metrics inside the pasted object.

{photo_seg}

{_method_table(photographs, photo_methods)}

By object: a photograph crop, a skin-coloured hand, one plain colour, a flat card over the mouth or
an eye (IoU of our mask with the object; PSNR inside it of ours, Telea on our mask, the input).

{photo_objects}

## Checks (issue 9)

{checks}

## Samples

Columns: occluded input | predicted mask | de-occluded output | ground truth. Test split first
(spread over mask ratios), then the photograph set.

![samples]({grid_name})
"""


def save_gradcam(gradcam: dict[str, Any], directory: Path, scale: int = 4) -> Path:
    """One PNG per sample and class under `directory`, and one sheet beside it (a row per sample:
    the image, then each class's map); returns the sheet's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    rows = []
    for image, maps, sample in zip(gradcam["images"], gradcam["maps"], gradcam["samples"]):
        plain = Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        tiles = [np.asarray(plain.resize((plain.width * scale, plain.height * scale), Image.NEAREST))]
        for label, cam in zip(gradcam["classes"], maps):
            tile = overlay(image, cam, scale)
            Image.fromarray(tile).save(directory / f"{sample}_{label}.png")
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    sheet = directory.with_suffix(".png")
    Image.fromarray(np.concatenate(rows, axis=0)).save(sheet)
    return sheet


def champion_results(cfg: Config) -> Champion | None:
    """The registered champion's recorded evaluation (its register run's metrics.json and bin table)."""
    try:
        version = champion_version(DEOCCLUSION_MODEL)
        if version is None:
            return None
        record = version_record(DEOCCLUSION_MODEL, version)
        run_id = record.tags.get("register_run_id") or record.run_id
        with tempfile.TemporaryDirectory(prefix="champion-") as workdir:
            metrics_file = download_run_file(run_id, "evaluation/metrics.json", Path(workdir))
            bins_file = download_run_file(run_id, "evaluation/by_mask_ratio.csv", Path(workdir))
            if metrics_file is None:
                return None
            metrics = json.loads(metrics_file.read_text())
            bins = read_bins(bins_file) if bins_file is not None else None
    except (LookupError, OSError, ValueError) as error:
        logger.warning("champion's recorded evaluation not shown: %s", error)
        return None
    try:
        ours: str | None = data_version(cfg.root, Paths(cfg.root).dataset)
    except FileNotFoundError:   # evaluate run outside `dvc repro`: no recorded version to compare
        ours = None
    if ours is None:
        note = "This evaluation's data version is not recorded (run outside `dvc repro`): compare with care."
    elif record.tags.get("data_version") == ours:
        note = "Tested on this same data version."
    else:
        note = "Tested on another data version: compare with care."
    return Champion(f"champion v{version}", metrics, bins, note)


REPORT_FILES = ("report.html", "report.md", "samples.png", "gradcam.png", "by_mask_ratio.csv", "per_image.csv",
                "metrics.json", LATENCY_FILE)


def run(cfg: Config) -> dict[str, Any]:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    result = evaluate(cfg)
    columns = [torch.cat([a, b]) for a, b in zip(result["grid"], result["photograph_grid"])] \
        if result["photograph_grid"] else result["grid"]
    grid = save_grid(columns, paths.evaluation / "samples.png")
    save_gradcam(result["gradcam"], paths.evaluation / "gradcam")
    # Which samples the maps show follows evaluation.grid_samples, a display setting: kept with the
    # maps, out of metrics.json (which `register` depends on).
    write_json(paths.evaluation / "gradcam" / "index.json", result["metrics"].pop("gradcam"))
    write_csv(result["bins"], paths.evaluation / "by_mask_ratio.csv")
    write_csv(result["per_image"], paths.evaluation / "per_image.csv")
    write_text(paths.evaluation / "report.md", render_report(cfg, result, grid.name))
    # Timings differ on every run: kept out of metrics.json, so that a rerun that changes no score
    # (a cosmetic param) leaves it, and so `register`, untouched.
    write_json(paths.evaluation / LATENCY_FILE, result["metrics"].pop("latency"))
    write_json(paths.evaluation / "metrics.json", result["metrics"])
    with stage_run(cfg, "evaluate", {"test_samples": result["metrics"]["test_samples"]}):
        champion = champion_results(cfg)
        write_text(paths.evaluation / "report.html", render_report_from_dir(paths.evaluation, champion=champion))
        log_metrics(flat_metrics({k: v for k, v in result["metrics"].items()
                                  if k not in ("checks", "latency", "about", "gradcam")}))
        for name in REPORT_FILES:
            log_artifact(paths.evaluation / name, "evaluation")
    failed = [name for name, ok in result["metrics"]["checks"].items() if not ok]
    if failed:
        logger.warning("issue 9 floors not met: %s", "; ".join(failed))
    logger.info("evaluation report: %s", paths.evaluation / "report.html")
    return result["metrics"]


def metric_value(metrics: dict[str, Any], dotted: str, source: Path) -> float:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{source}: no metric '{dotted}'")
        value = value[part]
    return float(value)
