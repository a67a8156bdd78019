"""What a pipeline run prints: Prefect's engine chatter stays in its log store, off the terminal."""

from __future__ import annotations

import logging
import re

ENGINE_CHATTER = re.compile(r"(^|- )(Finished in state Completed\(\)|Beginning (flow|subflow) run|Created (task|flow) run"
                            r"|Executing |View at |Running task)")


class EngineChatterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ENGINE_CHATTER.search(record.getMessage())
