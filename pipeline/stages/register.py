"""Stage register: the three registered models, tagged with their provenance, and the promotion gate.

The new `deocclusion` version becomes `champion` only when it meets every floor (the first version
too): it beats the baselines on every floor metric of the test split and of the photograph set, and
its masks reach the photograph set's minimum IoU. Against the current champion, re-scored on this
version's test split, the paired bootstrap interval of its per-image improvement must clear
`promotion.min_improvement`, unless the champion, re-scored on this version's photograph set, breaks
a photograph floor: a champion whose masks miss real photographs' objects is replaced by a version
that meets the floors. Otherwise it is `challenger`. The decision, interval, floors and a link to the
gate report are written on the version; the report (reports/gate.html) and a model card go with the
register run.
"""

from __future__ import annotations

import csv
import getpass
import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.config import RESOLVED_PARAMS_FILE, Config, as_flat_dict
from pipeline.data.dataset import SplitFiles, SplitTensors, load_split, read_manifest
from pipeline.deocclusion import Deoccluder, inpaint
from pipeline.evaluation.metrics import inpainting_metrics, iou
from pipeline.evaluation.telea import telea_inpaint
from pipeline.models.checkpoint import file_md5, load_checkpoint
from pipeline.registry.aliases import RESCORED_BROKEN_TAG, alias_version, move_alias
from pipeline.registry.gate import (CHAMPION, FloorCheck, GateDecision, check_floors, check_photograph_floors, decide,
                                    paired_comparison)
from pipeline.registry.mlflow_models import (DEOCCLUSION_MODEL, INPAINTER_MODEL, SEGMENTER_MODEL, delete_version_tag,
                                             download_run_file, load_deoccluder, log_deocclusion_model, log_network,
                                             register, set_version_tags, tensor_signature, version_record)
from pipeline.evaluation.html_report import render_report_from_dir
from pipeline.registry.pages import gate_page, gate_section, model_card
from pipeline.registry.tracking import artifact_link, log_artifact, log_metrics, log_params, set_tags, training_run_of
from pipeline.stages.common import Paths, data_version, flat_metrics, provenance_tags, stage_run, write_json, write_text
from pipeline.stages.evaluate import champion_results, metric_value, photograph_split

logger = logging.getLogger(__name__)

SCORED_METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
PER_IMAGE_ARTIFACT = "gate/per_image.csv"     # the version's per-image scores, paired against later candidates
GATE_PAGE, MODEL_CARD = "gate.html", "model_card.md"   # under reports/, beside registration.json

PerImage = dict[str, dict[str, float]]        # sample id -> metric -> value


def evaluation_device(cfg: Config) -> torch.device:
    if cfg.evaluation.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.evaluation.device)


def per_image_scores(deoccluder: Deoccluder, split: SplitFiles, group: str, batch_size: int) -> PerImage:
    """Every metric, image by image, of `group` (end_to_end: predicted masks; gt_mask: true masks)."""
    scores: PerImage = {}
    for part in split.chunks(batch_size):
        if group == "end_to_end":
            mask = deoccluder.masks(part.occluded_image)
        else:
            mask = part.occluder_mask
        output = inpaint(deoccluder.inpainter, part.occluded_image, mask, deoccluder.inpainter_resolution)
        metrics = inpainting_metrics(output, part.clean_image, part.occluder_mask)
        for index, sample in enumerate(part.ids):
            scores[sample] = {name: float(metrics[name][index]) for name in SCORED_METRICS}
    return scores


def photograph_scores(deoccluder: Deoccluder, photographs: SplitTensors, group: str, baselines: Sequence[str],
                      telea_radius: int) -> dict[str, dict[str, float]]:
    """The photograph set's metrics as evaluate reports them (`photographs` in metrics.json, means
    rounded to 5 decimals), for the gate's photograph floors: the masks' mean IoU with the pasted
    objects, `group` (end_to_end: predicted masks; gt_mask: the objects' masks) and each baseline
    (Telea given the predicted masks, as evaluate's `telea`), averaged over the photographs."""
    predicted = deoccluder.masks(photographs.occluded_image)
    mask = predicted if group == "end_to_end" else photographs.occluder_mask
    outputs = {group: inpaint(deoccluder.inpainter, photographs.occluded_image, mask, deoccluder.inpainter_resolution)}
    if "occluded_input" in baselines:
        outputs["occluded_input"] = photographs.occluded_image
    if "telea" in baselines:
        outputs["telea"] = telea_inpaint(photographs.occluded_image, predicted, telea_radius)
    scores: dict[str, dict[str, float]] = {
        "segmentation": {"iou": round(float(iou(predicted, photographs.occluder_mask).mean()), 5)}}
    for method, output in outputs.items():
        metrics = inpainting_metrics(output, photographs.clean_image, photographs.occluder_mask)
        scores[method] = {name: round(float(metrics[name].mean()), 5) for name in SCORED_METRICS}
    return scores


def read_per_image_csv(path: Path, group: str | None = None) -> PerImage:
    """Per-image scores from a CSV with a `sample` column (and `method` or `group`, filtered to `group`)."""
    scores: PerImage = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            method = row.get("method") or row.get("group")
            if group is not None and method is not None and method != group:
                continue
            scores[row["sample"]] = {name: float(row[name]) for name in SCORED_METRICS if row.get(name) not in (None, "")}
    return scores


def write_per_image_csv(scores: PerImage, group: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "group", *SCORED_METRICS])
        for sample in sorted(scores):
            writer.writerow([sample, group, *(repr(scores[sample].get(name, float("nan"))) for name in SCORED_METRICS)])


def candidate_scores(cfg: Config, deoccluder: Deoccluder, split: SplitFiles, group: str) -> PerImage:
    """The evaluate stage's per-image scores when it wrote them for every test image, else scored here."""
    evaluated = Paths(cfg.root).evaluation / "per_image.csv"
    if evaluated.is_file():
        scores = read_per_image_csv(evaluated, group)
        if set(scores) >= set(split.ids):
            return {sample: scores[sample] for sample in split.ids}
        logger.warning("%s: does not cover the test split; scoring here", evaluated)
    return per_image_scores(deoccluder, split, group, cfg.evaluation.batch_size)


def recorded_champion_scores(champion: str, our_data_version: str, split: SplitFiles, group: str,
                             workdir: Path) -> PerImage | None:
    """The champion's own recorded per-image scores, when it was tested on this same data version."""
    record = version_record(DEOCCLUSION_MODEL, champion)
    if record.tags.get("data_version") != our_data_version or not record.run_id:
        return None
    recorded = download_run_file(record.tags.get("register_run_id") or record.run_id, PER_IMAGE_ARTIFACT, workdir)
    if recorded is None:
        return None
    scores = read_per_image_csv(recorded, group)
    return {s: scores[s] for s in split.ids} if set(scores) >= set(split.ids) else None


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return "unknown"


def photograph_floors(cfg: Config, photographs: dict[str, Any] | None, group: str) -> tuple[FloorCheck, ...]:
    promotion = cfg.promotion
    return check_photograph_floors(photographs, group, promotion.photograph_min_iou, promotion.photograph_baselines,
                                   promotion.photograph_metrics)


def champion_photograph_floors(cfg: Config, champion: Deoccluder, group: str) -> tuple[FloorCheck, ...]:
    """The champion's photograph floors on the photograph set this version was evaluated on (it depends
    on the code, data.resolution and seed, not on the dataset), scored by the same code."""
    scores = photograph_scores(champion, photograph_split(cfg.data.resolution, cfg.seed), group,
                               cfg.promotion.photograph_baselines, cfg.evaluation.telea_radius)
    return photograph_floors(cfg, scores, group)


def gate(cfg: Config, metrics: dict[str, Any], candidate: PerImage, deoccluder: Deoccluder, split: SplitFiles,
         our_data_version: str, workdir: Path) -> tuple[GateDecision, PerImage, PerImage | None, str | None]:
    """The gate's decision for this version; also the paired scores (candidate's, champion's) and
    where the champion's came from.

    The champion's recorded scores count when it was tested on this data version. Otherwise (trained
    and tested on other data, or registered before scores were recorded) both models are re-scored
    here on this version's test split, by the same code, so the pairs differ only by the model. Its
    photograph floors are re-scored when the candidate meets every floor of its own: the photograph set
    changes with the code, not the data."""
    group, _, metric = cfg.registry.promote_metric.partition(".")
    promotion = cfg.promotion
    floors = (*check_floors(metrics, group, promotion.floor_baselines, promotion.floor_metrics),
              *photograph_floors(cfg, metrics.get("photographs"), group))
    champion = alias_version(DEOCCLUSION_MODEL, CHAMPION)
    if champion is None:
        return decide(floors, None, None, promotion.min_improvement), candidate, None, None
    device = evaluation_device(cfg)
    theirs = recorded_champion_scores(champion, our_data_version, split, group, workdir)
    # The champion's photograph floors matter only when the candidate meets its own floors.
    rescore_photographs = (any(check.split == "photographs" for check in floors)
                           and all(check.passed for check in floors))
    champion_model = None
    if theirs is None or rescore_photographs:
        champion_model = load_deoccluder(f"models:/{DEOCCLUSION_MODEL}/{champion}").to(device)
    champion_floors = champion_photograph_floors(cfg, champion_model, group) if rescore_photographs else ()
    source = "recorded (same data version)"
    if theirs is None:
        record = version_record(DEOCCLUSION_MODEL, champion)
        theirs = per_image_scores(champion_model, split, group, cfg.evaluation.batch_size)
        candidate = per_image_scores(deoccluder.to(device), split, group, cfg.evaluation.batch_size)
        deoccluder.to("cpu")
        source = "both re-scored on this version's test split" + (
            f" (champion tested on data {record.tags.get('data_version', '?')})"
            if record.tags.get("data_version") != our_data_version else " (champion has no recorded scores)")
    if champion_model is not None:
        champion_model.to("cpu")
    comparison = paired_comparison(metric, {s: v[metric] for s, v in candidate.items()},
                                   {s: v[metric] for s, v in theirs.items()}, promotion.bootstrap_resamples,
                                   promotion.confidence, promotion.bootstrap_seed)
    return decide(floors, comparison, champion, promotion.min_improvement, champion_floors), candidate, theirs, source


def run(cfg: Config) -> dict[str, Any]:
    paths = Paths(cfg.root)
    metrics_path = paths.evaluation / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: evaluation metrics not found (run the evaluate stage first)")
    metrics = json.loads(metrics_path.read_text())
    score = metric_value(metrics, cfg.registry.promote_metric, metrics_path)
    group = cfg.registry.promote_metric.partition(".")[0]
    tags = {**provenance_tags(cfg, "register"), "data_version": data_version(cfg.root, paths.dataset)}
    segmenter, segmenter_settings = load_checkpoint(paths.segmenter)
    inpainter, inpainter_settings = load_checkpoint(paths.finetuned_inpainter)
    deoccluder = Deoccluder.from_settings(segmenter, segmenter_settings, inpainter,
                                          inpainter_settings).to(evaluation_device(cfg))
    test = load_split(paths.dataset, "test")
    ours = candidate_scores(cfg, deoccluder, test, group)
    deoccluder.to("cpu")  # logged from the CPU, as it was saved
    example_row = next(row for row in read_manifest(paths.dataset) if row["split"] == "test")
    example_image: np.ndarray = np.asarray(Image.open(paths.dataset / example_row["image_path"]).convert("RGB"))
    version_tags = {key: tags[key] for key in ("git_commit", "data_version", "data_tag", "params_hash")}
    workdir = Path(tempfile.mkdtemp(prefix="register-"))
    try:
        with stage_run(cfg, "register", {"promote_metric": cfg.registry.promote_metric}) as mlflow_run:
            run_id = mlflow_run.info.run_id
            decision, paired_ours, theirs, champion_source = gate(cfg, metrics, ours, deoccluder, test,
                                                                  tags["data_version"], workdir)
            set_tags({"data_version": tags["data_version"]})
            log_params({f"params.{k}": v for k, v in as_flat_dict(_resolved(cfg)).items()})
            log_metrics({**flat_metrics({k: v for k, v in metrics.items() if k != "checks"}),
                         cfg.registry.promote_metric: score})
            versions = _register_models(cfg, paths, deoccluder, segmenter_settings, inpainter_settings, example_image,
                                        version_tags, score)
            version = versions[DEOCCLUSION_MODEL]
            report_link = artifact_link(cfg.registry, run_id, f"gate/{GATE_PAGE}")
            write_per_image_csv(ours, group, workdir / "per_image.csv")
            section = gate_section(version, cfg.registry.promote_metric, decision, paired_ours, theirs, champion_source,
                                   test.mask_ratio.tolist(), test.ids, cfg.evaluation.mask_ratio_bins)
            page = _gate_report(cfg, paths, version, section)
            card = model_card(DEOCCLUSION_MODEL, version, metrics, decision, {**version_tags, "profile": cfg.profile},
                              segmenter_settings.arch, inpainter_settings.arch, cfg.registry.promote_metric)
            gate_path, card_path = paths.registration.with_name(GATE_PAGE), paths.registration.with_name(MODEL_CARD)
            write_text(gate_path, page)
            write_text(card_path, card)
            for path, folder in ((workdir / "per_image.csv", "gate"), (gate_path, "gate"), (card_path, None),
                                 (metrics_path, "evaluation"), (cfg.root / "params.yaml", "params"),
                                 (cfg.root / RESOLVED_PARAMS_FILE, "params")):
                if path.is_file():
                    log_artifact(path, folder)
            for name in ("by_mask_ratio.csv", "per_image.csv"):
                if (paths.evaluation / name).is_file():
                    log_artifact(paths.evaluation / name, "evaluation")
            set_tags(decision.tags())
            set_version_tags(DEOCCLUSION_MODEL, version,
                             {**decision.tags(), f"metric.{cfg.registry.promote_metric}": repr(score),
                              "gate.report": report_link, "register_run_id": run_id},
                             description=_description(segmenter_settings.arch, inpainter_settings.arch,
                                                      cfg.registry.promote_metric, score, decision, report_link))
            # The champion's mark follows its latest re-scoring: set before the alias moves away from it,
            # cleared when it meets every photograph floor again (the set changes with the code).
            if decision.alias == CHAMPION and decision.champion_broken_floors:
                broken = ", ".join(check.label for check in decision.champion_broken_floors)
                set_version_tags(DEOCCLUSION_MODEL, decision.champion_version,
                                 {RESCORED_BROKEN_TAG: f"{broken}, re-scored when version {version} was registered"})
            elif decision.champion_floors and not decision.champion_broken_floors:
                delete_version_tag(DEOCCLUSION_MODEL, decision.champion_version, RESCORED_BROKEN_TAG)
            move = move_alias(DEOCCLUSION_MODEL, decision.alias, version, _who(), decision.reason, "register")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    comparison = decision.comparison
    summary = {
        "tracking_uri": cfg.registry.tracking_uri, "run_id": run_id, "versions": versions,
        "alias": decision.alias, "metric": cfg.registry.promote_metric, "value": score,
        "previous_champion": decision.champion_version,
        "previous_value": comparison.champion_mean if comparison is not None else None,
        "model_uri": f"models:/{DEOCCLUSION_MODEL}/{version}", **version_tags,
        "gate": {"reason": decision.reason, "floors_passed": decision.floors_passed,
                 "floors": [floor_record(c) for c in decision.floors],
                 "champion_floors": [floor_record(c) for c in decision.champion_floors],
                 "comparison": None if comparison is None else {
                     "metric": comparison.metric, "samples": comparison.samples,
                     "candidate_mean": comparison.candidate_mean, "champion_mean": comparison.champion_mean,
                     "mean_improvement": comparison.mean_improvement, "lower": comparison.lower,
                     "upper": comparison.upper, "level": comparison.level, "resamples": comparison.resamples,
                     "champion_scores": champion_source},
                 "report": report_link, "alias_move": {"from": move.from_version, "to": move.to_version,
                                                       "who": move.who, "when": move.when}},
    }
    write_json(paths.registration, summary)
    logger.info("registered %s version %s as %s: %s", DEOCCLUSION_MODEL, version, decision.alias, decision.reason)
    return summary


def floor_record(check: FloorCheck) -> dict[str, Any]:
    return {"split": check.split, "metric": check.metric, "baseline": check.baseline, "value": check.value,
            "baseline_value": check.baseline_value, "passed": check.passed}


def _gate_report(cfg: Config, paths: Paths, version: str, section: str) -> str:
    """The evaluation report with the gate's decision on top (the champion's recorded values beside
    the candidate's), or the gate's section alone when the evaluation left no report inputs."""
    if (paths.evaluation / "by_mask_ratio.csv").is_file():
        return render_report_from_dir(paths.evaluation, title=f"{DEOCCLUSION_MODEL} version {version}",
                                      champion=champion_results(cfg), extra_sections=[("Promotion gate", section)])
    return gate_page(DEOCCLUSION_MODEL, version, section)


def _resolved(cfg: Config) -> dict[str, Any]:
    import yaml

    resolved = cfg.root / RESOLVED_PARAMS_FILE
    return yaml.safe_load(resolved.read_text()) if resolved.is_file() else cfg.raw


def _description(segmenter_arch: str, inpainter_arch: str, metric: str, score: float, decision: GateDecision,
                 report_link: str) -> str:
    return (f"{segmenter_arch} + {inpainter_arch} (fine-tuned on predicted masks); {metric} = {score:.4f}.\n"
            f"Gate: {decision.alias}: {decision.reason}\nReport: {report_link}")


def _training_run(checkpoint: Path) -> str:
    """The MLflow run that wrote this checkpoint's exact bytes; `unknown` (with a warning) when the tracking
    store has none, e.g. models pulled with `dvc pull` into a workspace whose store never saw them trained."""
    run_id = training_run_of(checkpoint, file_md5(checkpoint))
    if run_id is None:
        logger.warning("%s: no run in the tracking store is tagged as having trained it; its lineage tag says 'unknown'",
                       checkpoint)
    return run_id or "unknown"


def _register_models(cfg: Config, paths: Paths, deoccluder: Deoccluder, segmenter_settings: Any,
                     inpainter_settings: Any, example_image: np.ndarray, version_tags: dict[str, str],
                     score: float) -> dict[str, str]:
    segmenter, inpainter = deoccluder.segmenter, deoccluder.inpainter
    image_shape, mask_shape = (-1, 3, -1, -1), (-1, 1, -1, -1)
    segmenter_uri = log_network(segmenter, SEGMENTER_MODEL,
                                tensor_signature({"image": image_shape}, {"logits": (-1, -1, -1, -1)}))
    inpainter_uri = log_network(inpainter, INPAINTER_MODEL,
                                tensor_signature({"image": image_shape, "mask": mask_shape}, {"image": image_shape}))
    deocclusion_uri = log_deocclusion_model(paths.segmenter, paths.finetuned_inpainter, example_image)
    training_runs = {path: _training_run(path) for path in (paths.segmenter, paths.finetuned_inpainter)}
    versions = {
        SEGMENTER_MODEL: register(segmenter_uri, SEGMENTER_MODEL,
                                  {**version_tags, "arch": segmenter_settings.arch,
                                   "training_run_id": training_runs[paths.segmenter],
                                   # its logits alone do not give the pipeline's masks: how they are cut
                                   "threshold": str(segmenter_settings.threshold),
                                   "opening_kernel": str(segmenter_settings.opening_kernel),
                                   "test_time_flip": str(segmenter_settings.test_time_flip).lower()}),
        INPAINTER_MODEL: register(inpainter_uri, INPAINTER_MODEL,
                                  {**version_tags, "arch": inpainter_settings.arch,
                                   "training_run_id": training_runs[paths.finetuned_inpainter]}),
    }
    versions[DEOCCLUSION_MODEL] = register(
        deocclusion_uri, DEOCCLUSION_MODEL,
        {**version_tags, "segmenter_version": versions[SEGMENTER_MODEL], "inpainter_version": versions[INPAINTER_MODEL]},
        description=f"{segmenter_settings.arch} + {inpainter_settings.arch}; {cfg.registry.promote_metric} = {score:.4f}")
    return versions
