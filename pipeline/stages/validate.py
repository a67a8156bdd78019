"""Stage validate: the Great Expectations suite over the dataset; failure stops the pipeline."""

from __future__ import annotations

import logging
import os

from pipeline.config import Config
from pipeline.data.dataset import MANIFEST
from pipeline.data.validation import DataValidationError, ValidationOutcome, render_html, validate_dataset
from pipeline.stages.common import Paths, write_json, write_text

logger = logging.getLogger(__name__)


def run(cfg: Config) -> ValidationOutcome:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    paths = Paths(cfg.root)
    manifest = paths.dataset / MANIFEST
    outcome = validate_dataset(paths.dataset, cfg.data.resolution, (cfg.data.mask_ratio_min, cfg.data.mask_ratio_max),
                               cfg.validation.max_failing_examples)
    write_json(paths.validation / "result.json", outcome.result)
    write_text(paths.validation / "result.html", render_html(outcome, manifest))
    statistics = outcome.result.get("statistics", {})
    write_json(paths.validation / "summary.json", {
        "success": outcome.success,
        "evaluated_expectations": statistics.get("evaluated_expectations", 0),
        "failed_expectations": len(outcome.failures),
    })
    if not outcome.success:
        raise DataValidationError(outcome.describe(manifest) + f"\n  full result: {paths.validation / 'result.html'}")
    logger.info("dataset valid: %s expectations met", statistics.get("successful_expectations"))
    return outcome
