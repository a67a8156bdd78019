"""Stage train_segmenter: the occluder segmenter named by params.segmenter.arch."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config, as_flat_dict
from pipeline.data.dataset import load_split, resize_split
from pipeline.deocclusion import predict_masks
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import count_parameters
from pipeline.stages.common import Paths, seed_everything, stage_run, write_json
from pipeline.stages.training import build_segmenter, checkpoint_kwargs, fit, log_training_outputs
from pipeline.training.segmenter import SegmenterModule

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    section = cfg.segmenter
    resolution = section.resolution or cfg.data.resolution
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    net, kwargs = build_segmenter(section)
    params = {**as_flat_dict(section, "segmenter."), "seed": cfg.seed, "profile": cfg.profile,
              "parameters": count_parameters(net), "training_resolution": resolution}
    with stage_run(cfg, "train_segmenter", params) as mlflow_run:
        module = SegmenterModule(net, section.optimizer, section.loss_weights, section.threshold, section.opening_kernel,
                                 hflip=section.hflip, test_time_flip=section.test_time_flip)
        history = fit(module, "train_segmenter", section, train, val, resolution, cfg.seed, cfg.registry, mlflow_run.info.run_id,
                      paths.models)
        net.eval()
        settings = NetworkSettings(section.arch, checkpoint_kwargs(net, kwargs), "segmenter", resolution,
                                   threshold=section.threshold,
                                   opening_kernel=section.opening_kernel, test_time_flip=section.test_time_flip)
        save_checkpoint(paths.segmenter, net, settings)
        shown = resize_split(val.select(0, 8), resolution)
        predicted = predict_masks(net, shown.occluded_image, section.threshold, None, section.opening_kernel,
                                  test_time_flip=section.test_time_flip)
        final = log_training_outputs([paths.segmenter], history, paths.training_reports / "segmenter_history.csv",
                             [shown.occluded_image, predicted, shown.occluder_mask],
                             paths.training_reports / "segmenter_samples.png")
    write_json(paths.training_reports / "segmenter_metrics.json", final)
    logger.info("segmenter %s trained: %s", section.arch, final)
    return paths.segmenter
