"""Stage train_inpainter: the inpainter named by params.inpainter.arch, on ground-truth masks,
adversarially when a discriminator is configured."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config, as_flat_dict
from pipeline.data.dataset import load_split, resize_split
from pipeline.deocclusion import inpaint
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import count_parameters, create_model
from pipeline.stages.common import Paths, seed_everything, stage_run, write_json
from pipeline.stages.training import (build_feature_extractor, build_inpainter, checkpoint_kwargs,
                                      effective_loss_weights, fit, log_training_outputs)
from pipeline.training.inpainter import InpainterModule

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    section = cfg.inpainter
    resolution = section.resolution or cfg.data.resolution
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    net, kwargs = build_inpainter(section)
    discriminator = (create_model(section.discriminator.arch, "discriminator", **section.discriminator.arch_kwargs)
                     if section.discriminator else None)
    features = build_feature_extractor(section, cfg.seed)
    weights = effective_loss_weights(section.loss_weights, features is not None, discriminator is not None)
    params = {**as_flat_dict(section, "inpainter."), "seed": cfg.seed, "profile": cfg.profile,
              "parameters": count_parameters(net), "training_resolution": resolution,
              "perceptual.backbone": f"vgg19-{section.perceptual_weights}" if features else "none",
              "effective_loss_weights": weights}
    with stage_run(cfg, "train_inpainter", params) as mlflow_run:
        module = InpainterModule(net, section.optimizer, weights, discriminator, features, section.adversarial_loss,
                                 section.discriminator.lr_scale if section.discriminator else 1.0)
        history = fit(module, "train_inpainter", section, train, val, resolution, cfg.seed, cfg.registry, mlflow_run.info.run_id,
                      paths.models)
        net.eval()
        settings = NetworkSettings(
            section.arch, checkpoint_kwargs(net, kwargs), "inpainter", resolution, mlflow_run.info.run_id,
            discriminator_arch=section.discriminator.arch if section.discriminator else None,
            discriminator_kwargs=dict(section.discriminator.arch_kwargs) if section.discriminator else {})
        save_checkpoint(paths.inpainter, net, settings, discriminator.eval() if discriminator is not None else None)
        checkpoints = [paths.inpainter]
        shown = resize_split(val.select(0, 8), resolution)
        output = inpaint(net, shown.occluded_image, shown.occluder_mask)
        final = log_training_outputs(checkpoints, history, paths.training_reports / "inpainter_history.csv",
                             [shown.occluded_image, shown.occluder_mask, output, shown.clean_image],
                             paths.training_reports / "inpainter_samples.png")
    write_json(paths.training_reports / "inpainter_metrics.json", final)
    logger.info("inpainter %s trained: %s", section.arch, final)
    return paths.inpainter
