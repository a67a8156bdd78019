"""Stage register: the three registered models, tagged with their provenance; champion by metric."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config import Config
from pipeline.data.dataset import read_manifest
from pipeline.models.checkpoint import load_checkpoint
from pipeline.registry.mlflow_models import (DEOCCLUSION_MODEL, INPAINTER_MODEL, SEGMENTER_MODEL, log_deocclusion_model,
                                      log_network, promote, register)
from pipeline.registry.tracking import log_metrics, set_tags
from pipeline.stages.common import Paths, data_version, provenance_tags, stage_run, write_json
from pipeline.stages.evaluate import metric_value

logger = logging.getLogger(__name__)


def run(cfg: Config) -> dict[str, Any]:
    paths = Paths(cfg.root)
    metrics_path = paths.evaluation / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: evaluation metrics not found (run the evaluate stage first)")
    metrics = json.loads(metrics_path.read_text())
    score = metric_value(metrics, cfg.registry.promote_metric, metrics_path)
    tags = {**provenance_tags(cfg, "register"), "data_version": data_version(cfg.root, paths.dataset)}
    segmenter, segmenter_settings = load_checkpoint(paths.segmenter)
    inpainter, inpainter_settings = load_checkpoint(paths.finetuned_inpainter)
    example_row = next(row for row in read_manifest(paths.dataset) if row["split"] == "test")
    example_image: np.ndarray = np.asarray(Image.open(paths.dataset / example_row["image_path"]).convert("RGB"))
    version_tags = {key: tags[key] for key in ("git_commit", "data_version", "params_hash")}
    with stage_run(cfg, "register", {"promote_metric": cfg.registry.promote_metric}) as mlflow_run:
        set_tags({"data_version": tags["data_version"]})
        log_metrics({cfg.registry.promote_metric: score})
        segmenter_uri = log_network(segmenter, SEGMENTER_MODEL)
        inpainter_uri = log_network(inpainter, INPAINTER_MODEL)
        deocclusion_uri = log_deocclusion_model(paths.segmenter, paths.finetuned_inpainter, example_image)
        versions = {
            SEGMENTER_MODEL: register(segmenter_uri, SEGMENTER_MODEL,
                                      {**version_tags, "arch": segmenter_settings.arch,
                                       "training_run_id": segmenter_settings.training_run_id}),
            INPAINTER_MODEL: register(inpainter_uri, INPAINTER_MODEL,
                                      {**version_tags, "arch": inpainter_settings.arch,
                                       "training_run_id": inpainter_settings.training_run_id}),
        }
        versions[DEOCCLUSION_MODEL] = register(
            deocclusion_uri, DEOCCLUSION_MODEL,
            {**version_tags, "segmenter_version": versions[SEGMENTER_MODEL], "inpainter_version": versions[INPAINTER_MODEL]},
            description=f"{segmenter_settings.arch} + {inpainter_settings.arch} (fine-tuned on predicted masks); "
                        f"{cfg.registry.promote_metric} = {score:.4f}")
        decision = promote(DEOCCLUSION_MODEL, versions[DEOCCLUSION_MODEL], cfg.registry.promote_metric, score,
                           cfg.registry.promote_greater_is_better)
    summary = {
        "tracking_uri": cfg.registry.tracking_uri, "run_id": mlflow_run.info.run_id, "versions": versions,
        "alias": decision.alias, "metric": decision.metric, "value": decision.value,
        "previous_champion": decision.previous_champion, "previous_value": decision.previous_value,
        "model_uri": f"models:/{DEOCCLUSION_MODEL}/{versions[DEOCCLUSION_MODEL]}", **version_tags,
    }
    write_json(paths.registration, summary)
    logger.info("registered %s version %s as %s", DEOCCLUSION_MODEL, versions[DEOCCLUSION_MODEL], decision.alias)
    return summary
