"""Stage resolve_params: params.yaml with the active profile merged in, for DVC to track per key."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import PARAMS_FILE, RESOLVED_PARAMS_FILE, Config, resolved_params_text
from pipeline.stages.common import write_text

logger = logging.getLogger(__name__)


def run(cfg: Config) -> Path:
    target = cfg.root / RESOLVED_PARAMS_FILE
    text = resolved_params_text(cfg.root / PARAMS_FILE)
    if not target.is_file() or target.read_text() != text:
        write_text(target, text)
    logger.info("resolved profile %s into %s", cfg.profile, target)
    return target
