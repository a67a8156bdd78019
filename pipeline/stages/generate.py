"""Stage generate: the dataset (PNG files + manifest) under data/dataset, from params.data.

`data.source: synthetic` renders it; `faces`, `labelled` or `masks` ingests the raw folder
`data.raw` (a DVC dep, so new raw data is a new dataset version) through `pipeline.ingest`.
Mask ratios are stratified per split: each split's samples cycle through the strata of
[mask_ratio_min, mask_ratio_max] cut at every tenth (paper 000's bins for 0.01..0.6), so every bin
of the evaluation holds its share of the test split."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipeline.config import Config
from pipeline.data.dataset import write_manifest, write_sample
from pipeline.data.facts import record_facts, write_facts
from pipeline.data.synthetic import assign_splits, render_sample, stratified_mask_ratios
from pipeline.stages.common import Paths

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    if cfg.data.source != "synthetic":
        return ingest_raw(cfg)
    target = Paths(cfg.root).dataset
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    data = cfg.data
    splits = assign_splits(data.count, data.splits, cfg.seed)
    targets = stratified_mask_ratios(splits, data.mask_ratio_min, data.mask_ratio_max, cfg.seed)
    rows, facts = [], []
    for index, (stratum_low, stratum_high, ratio_target) in enumerate(targets):
        sample = render_sample(cfg.seed, index, data.resolution, data.occluders, (stratum_low, stratum_high), ratio_target)
        rows.append(write_sample(partial, f"{index:06d}", sample, splits[index]))
        facts.append(record_facts(partial, rows[-1], {"image_path": sample.occluded_image, "clean_path": sample.clean_image,
                                                      "mask_path": sample.occluder_mask, "label_path": sample.label_map}))
    write_manifest(partial, rows)
    write_facts(partial, facts)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    logger.info("wrote %d samples (%d px) to %s", data.count, data.resolution, target)
    return target


def ingest_raw(cfg: Config) -> Path:
    from pipeline.ingest.ingest import ingest, layout_options, settings_from

    target = Paths(cfg.root).dataset
    raw = (cfg.root / cfg.data.raw).resolve() if not Path(cfg.data.raw).is_absolute() else Path(cfg.data.raw)
    shutil.rmtree(target, ignore_errors=True)
    result = ingest(raw, cfg.data.source, target.name, target.parent, settings_from(cfg),
                    **layout_options(raw, cfg.data.source), progress=False)
    logger.info("ingested %d %s samples (%d px) from %s to %s: %s", result.samples, cfg.data.source, cfg.data.resolution,
                raw, target, result.splits)
    return target
