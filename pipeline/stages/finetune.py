"""Stage finetune: the trained inpainter (and its discriminator) fine-tuned on the trained
segmenter's predicted masks, with the inpainter's losses (paper 000, section IV)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from pipeline.config import Config, as_flat_dict
from pipeline.data.dataset import load_split, resize_split
from pipeline.deocclusion import inpaint, predict_masks
from pipeline.models.checkpoint import load_checkpoint, load_discriminator, save_checkpoint
from pipeline.stages.common import Paths, seed_everything, stage_run, write_json
from pipeline.stages.training import build_feature_extractor, effective_loss_weights, fit, log_training_outputs
from pipeline.training.inpainter import JointFinetuneModule

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    section = cfg.finetune
    segmenter, segmenter_settings = load_checkpoint(paths.segmenter)
    inpainter, inpainter_settings = load_checkpoint(paths.inpainter)
    discriminator = load_discriminator(paths.inpainter).train() if inpainter_settings.adversarial else None
    resolution = inpainter_settings.resolution
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    threshold = segmenter_settings.threshold
    segmenter_resolution = segmenter_settings.resolution
    opening_kernel = segmenter_settings.opening_kernel
    features = build_feature_extractor(cfg.inpainter, cfg.seed)
    weights = effective_loss_weights(section.loss_weights or cfg.inpainter.loss_weights, features is not None,
                                     discriminator is not None)
    params = {**as_flat_dict(section, "finetune."), "seed": cfg.seed, "profile": cfg.profile,
              "segmenter.arch": segmenter_settings.arch, "inpainter.arch": inpainter_settings.arch,
              "segmenter.threshold": threshold, "segmenter.test_time_flip": segmenter_settings.test_time_flip,
              "effective_loss_weights": weights,
              "perceptual.backbone": f"vgg19-{cfg.inpainter.perceptual_weights}" if features else "none"}
    with stage_run(cfg, "finetune", params) as mlflow_run:
        module = JointFinetuneModule(inpainter.train(), segmenter, section.optimizer, weights, threshold,
                                     segmenter_resolution, opening_kernel, segmenter_settings.test_time_flip,
                                     discriminator=discriminator, feature_extractor=features,
                                     adversarial_loss=cfg.inpainter.adversarial_loss,
                                     discriminator_lr_scale=cfg.inpainter.discriminator.lr_scale if cfg.inpainter.discriminator else 1.0,
                                     hflip=section.hflip)
        history = fit(module, "finetune", section, train, val, resolution, cfg.seed, cfg.registry, mlflow_run.info.run_id,
                      paths.models, determined_by={"inpainter": cfg.inpainter}, inputs=[paths.segmenter, paths.inpainter],
                      keep_start_unless_beaten=section.keep_if_no_gain)
        inpainter.eval()
        # The fine-tuned inpainter ships without its discriminator: nothing downstream trains it.
        settings = replace(inpainter_settings, discriminator_arch=None,
                           discriminator_kwargs={}, finetuned_on_segmenter=segmenter_settings.arch)
        save_checkpoint(paths.finetuned_inpainter, inpainter, settings)
        shown = resize_split(val.select(0, 8), resolution)
        predicted = predict_masks(segmenter, shown.occluded_image, threshold, segmenter_resolution, opening_kernel,
                                  test_time_flip=segmenter_settings.test_time_flip)
        output = inpaint(inpainter, shown.occluded_image, predicted)
        final = log_training_outputs([paths.finetuned_inpainter], history, paths.training_reports / "finetune_history.csv",
                             [shown.occluded_image, predicted, output, shown.clean_image],
                             paths.training_reports / "finetune_samples.png")
    write_json(paths.training_reports / "finetune_metrics.json", final)
    logger.info("inpainter fine-tuned on predicted masks: %s", final)
    return paths.finetuned_inpainter
