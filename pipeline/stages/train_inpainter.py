"""Stage train_inpainter: the inpainter named by params.inpainter.arch, on ground-truth masks."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config, as_flat_dict
from pipeline.data.dataset import load_split
from pipeline.deocclusion import inpaint
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.registry import count_parameters, create_model
from pipeline.registry.tracking import log_metrics, tracked_run
from pipeline.stages.common import Paths, provenance_tags, seed_everything, write_json
from pipeline.stages.training import fit, log_training_outputs
from pipeline.training.inpainter import InpainterModule

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    seed_everything(cfg.seed)
    paths = Paths(cfg.root)
    section = cfg.inpainter
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    net = create_model(section.arch, "inpainter", **section.arch_kwargs)
    params = {**as_flat_dict(section, "inpainter."), "seed": cfg.seed, "parameters": count_parameters(net)}
    with tracked_run(cfg.registry, "train_inpainter", provenance_tags(cfg, "train_inpainter"), params) as mlflow_run:
        module = InpainterModule(net, section.lr, section.loss_weights)
        history = fit(module, train, val, section.epochs, section.batch_size, cfg.seed, cfg.registry, mlflow_run.info.run_id)
        net.eval()
        save_checkpoint(paths.inpainter, net, section.arch, section.arch_kwargs, "inpainter",
                        resolution=cfg.data.resolution, mlflow_run_id=mlflow_run.info.run_id)
        shown = slice(0, min(8, len(val)))
        output = inpaint(net, val.occluded_image[shown], val.occluder_mask[shown])
        log_training_outputs(paths.inpainter, history, paths.training_reports / "inpainter_history.csv",
                             [val.occluded_image[shown], val.occluder_mask[shown], output, val.clean_image[shown]],
                             paths.training_reports / "inpainter_samples.png")
        final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
        log_metrics({f"final_{k}": v for k, v in final.items()})
    write_json(paths.training_reports / "inpainter_metrics.json", final)
    logger.info("inpainter %s trained: %s", section.arch, final)
    return paths.inpainter
