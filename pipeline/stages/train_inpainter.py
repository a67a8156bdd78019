"""Stage train_inpainter: the inpainter named by params.inpainter.arch, on ground-truth masks,
adversarially when a discriminator is configured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn

from pipeline.config import Config, InpainterConfig, as_flat_dict
from pipeline.data.dataset import SplitFiles, load_split, resize_split
from pipeline.deocclusion import inpaint
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import count_parameters, create_model
from pipeline.stages.common import Paths, seed_everything, stage_run, write_json
from pipeline.stages.training import (TrainingHistory, build_feature_extractor, build_inpainter, checkpoint_kwargs,
                                      effective_loss_weights, fit, fit_face_priors, log_training_outputs)
from pipeline.training.inpainter import InpainterModule

logger = logging.getLogger(__name__)


@dataclass
class InpainterTraining:
    """The networks, losses and data of one inpainter training, built after seeding: a trial of the
    loss-weight search (stage hpo) and this stage, given the same weights, train the same model."""

    section: InpainterConfig
    net: nn.Module
    kwargs: dict[str, Any]
    discriminator: nn.Module | None
    features: VGG19Features | None
    weights: dict[str, float]
    train: SplitFiles
    val: SplitFiles
    resolution: int
    params: dict[str, Any]


def prepare(cfg: Config, section: InpainterConfig) -> InpainterTraining:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    resolution = section.resolution or cfg.data.resolution
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    net, kwargs = build_inpainter(section)
    fit_face_priors(net, train, resolution, cfg.seed)
    discriminator = (create_model(section.discriminator.arch, "discriminator", **section.discriminator.arch_kwargs)
                     if section.discriminator else None)
    features = build_feature_extractor(section, cfg.seed)
    weights = effective_loss_weights(section.loss_weights, features is not None, discriminator is not None)
    params = {**as_flat_dict(section, "inpainter."), "seed": cfg.seed, "profile": cfg.profile,
              "parameters": count_parameters(net), "training_resolution": resolution,
              "perceptual.backbone": f"vgg19-{section.perceptual_weights}" if features else "none",
              "effective_loss_weights": weights}
    return InpainterTraining(section, net, kwargs, discriminator, features, weights, train, val, resolution, params)


def fit_inpainter(cfg: Config, training: InpainterTraining, stage: str, run_id: str, models_dir: Path,
                  callbacks: Sequence[L.Callback] = ()) -> TrainingHistory:
    """Train the prepared networks, logging to MLflow run `run_id`; the best epoch's weights are kept."""
    section = training.section
    module = InpainterModule(training.net, section.optimizer, training.weights, training.discriminator, training.features,
                             section.adversarial_loss, section.discriminator.lr_scale if section.discriminator else 1.0,
                             hflip=section.hflip)
    return fit(module, stage, section, training.train, training.val, training.resolution, cfg.seed, cfg.registry, run_id,
               models_dir, callbacks=callbacks)


def run(cfg: Config) -> Path:
    paths = Paths(cfg.root)
    section = cfg.inpainter
    training = prepare(cfg, section)
    net, discriminator, resolution = training.net, training.discriminator, training.resolution
    with stage_run(cfg, "train_inpainter", training.params) as mlflow_run:
        history = fit_inpainter(cfg, training, "train_inpainter", mlflow_run.info.run_id, paths.models)
        net.eval()
        settings = NetworkSettings(
            section.arch, checkpoint_kwargs(net, training.kwargs), "inpainter", resolution,
            discriminator_arch=section.discriminator.arch if section.discriminator else None,
            discriminator_kwargs=dict(section.discriminator.arch_kwargs) if section.discriminator else {})
        save_checkpoint(paths.inpainter, net, settings, discriminator.eval() if discriminator is not None else None)
        checkpoints = [paths.inpainter]
        shown = resize_split(training.val.select(0, 8), resolution)
        output = inpaint(net, shown.occluded_image, shown.occluder_mask)
        final = log_training_outputs(checkpoints, history, paths.training_reports / "inpainter_history.csv",
                             [shown.occluded_image, shown.occluder_mask, output, shown.clean_image],
                             paths.training_reports / "inpainter_samples.png")
    write_json(paths.training_reports / "inpainter_metrics.json", final)
    logger.info("inpainter %s trained: %s", section.arch, final)
    return paths.inpainter
