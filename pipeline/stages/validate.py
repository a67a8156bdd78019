"""Stage validate: the Great Expectations suite of data.source's kind over the dataset, run through a
Checkpoint that writes Data Docs; failure stops the pipeline."""

from __future__ import annotations

import logging
import os

from pipeline.config import Config
from pipeline.data.dataset import MANIFEST
from pipeline.data.validation import DataValidationError, ValidationOutcome, validate_dataset
from pipeline.stages.common import Paths, write_json

logger = logging.getLogger(__name__)


def run(cfg: Config) -> ValidationOutcome:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    paths = Paths(cfg.root)
    manifest = paths.dataset / MANIFEST
    docs = paths.validation / "data_docs"
    outcome = validate_dataset(paths.dataset, cfg.data.resolution, (cfg.data.mask_ratio_min, cfg.data.mask_ratio_max),
                               cfg.validation.max_failing_examples, kind=cfg.data.source, docs_dir=docs)
    write_json(paths.validation / "result.json", outcome.result)
    statistics = outcome.result.get("statistics", {})
    write_json(paths.validation / "summary.json", {
        "success": outcome.success,
        "suite": outcome.suite,
        "evaluated_expectations": statistics.get("evaluated_expectations", 0),
        "failed_expectations": len(outcome.failures),
    })
    if not outcome.success:
        raise DataValidationError(outcome.describe(manifest) + f"\n  Data Docs: {outcome.docs_index or docs}")
    logger.info("dataset valid: suite %s, %s expectations met; Data Docs: %s", outcome.suite,
                statistics.get("successful_expectations"), outcome.docs_index)
    return outcome
