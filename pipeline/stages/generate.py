"""Stage generate: the dataset (PNG files + manifest) under data/dataset, from params.data.

`data.source: synthetic` renders it; `faces`, `labelled` or `masks` ingests the raw folder
`data.raw` (a DVC dep, so new raw data is a new dataset version) through `pipeline.ingest`.
Mask ratios are stratified per split: each split's samples cycle through the strata of
[mask_ratio_min, mask_ratio_max] cut at every tenth (paper 000's bins for 0.01..0.6), so every bin
of the evaluation holds its share of the test split. Samples are rendered in worker processes (one
per CPU, each with SAMPLES_PER_WORKER samples at least); a sample is a function of (seed, index)
alone, so the files are the same whatever the number of processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial as partial_function
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.dataset import write_manifest, write_sample
from pipeline.data.facts import record_facts, write_facts
from pipeline.data.synthetic import assign_splits, render_sample, stratified_mask_ratios
from pipeline.stages.common import Paths

logger = logging.getLogger(__name__)


# Samples a worker process renders at the least: fewer are not worth a process's start (~2 s).
SAMPLES_PER_WORKER = 250


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
    jobs = [(index, low, high, ratio, splits[index]) for index, (low, high, ratio) in enumerate(targets)]
    workers = max(1, min(available_cpus(), len(jobs) // SAMPLES_PER_WORKER))
    render = partial_function(render_and_write, partial, cfg.seed, data.resolution, data.occluders)
    if workers == 1:
        written = [render(chunk) for chunk in chunks(jobs, workers)]
    else:   # each sample is a function of (seed, index) alone: the same files whatever the worker count
        with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
            written = list(pool.map(render, chunks(jobs, workers * 4)))
    rows = [row for part in written for row, _ in part]
    facts = [record for part in written for _, record in part]
    write_manifest(partial, rows)
    write_facts(partial, facts)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    logger.info("wrote %d samples (%d px) to %s in %d process(es)", data.count, data.resolution, target, workers)
    return target


def worker_context() -> multiprocessing.context.BaseContext:
    """fork on Linux: a worker starts at once and needs no `__main__` guard in the caller's script (it
    renders with NumPy and PIL only, never torch's thread pool); spawn where fork is unsafe (macOS)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunks(jobs: list[Any], count: int) -> list[list[Any]]:
    """`jobs` cut into `count` runs of consecutive items (fewer when there are fewer jobs), in order."""
    size = max(1, -(-len(jobs) // max(1, count)))
    return [jobs[start:start + size] for start in range(0, len(jobs), size)]


def render_and_write(root: Path, seed: int, resolution: int, occluders: dict[str, float],
                     jobs: list[tuple[int, float, float, float, str]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Render samples (index, stratum low, stratum high, target ratio, split) and write them under root:
    each one's manifest row and facts."""
    written = []
    for index, low, high, ratio, split in jobs:
        sample = render_sample(seed, index, resolution, occluders, (low, high), ratio)
        row = write_sample(root, f"{index:06d}", sample, split)
        written.append((row, record_facts(root, row, {"image_path": sample.occluded_image,
                                                      "clean_path": sample.clean_image,
                                                      "mask_path": sample.occluder_mask,
                                                      "label_path": sample.label_map})))
    return written


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
