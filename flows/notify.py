"""Telling a team about a promotion or a failure through a saved Prefect block.

`webhook/NAME` is a `Webhook` block (a JSON POST); any notification block (Slack, Teams, a custom
webhook...) is called with its `notify(body, subject)`. A notification that cannot be sent is
logged, never allowed to fail the run it reports on.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from prefect import get_run_logger
from prefect.blocks.core import Block
from prefect.utilities.asyncutils import run_coro_as_sync


def _complete(result: Any) -> Any:
    """Blocks' methods are async, or sync-compatible (already done when called from sync code)."""
    return run_coro_as_sync(result) if inspect.isawaitable(result) else result


def notify(block_slug: str | None, event: str, details: dict[str, Any]) -> bool:
    """Send `event` ("promoted" or "failed") with `details`; True when the block accepted it."""
    if not block_slug:
        return False
    logger = get_run_logger()
    payload = {"event": event, "source": "deocclude", **details}
    try:
        block = Block.load(block_slug)
        if hasattr(block, "notify"):
            _complete(block.notify(body=json.dumps(payload, default=str), subject=f"deocclude: {event}"))
        else:
            _complete(block.call(json.loads(json.dumps(payload, default=str)))).raise_for_status()
    except Exception as error:  # a broken hook must not turn a finished run into a failed one
        logger.warning("notification through %s not sent: %s", block_slug, error)
        return False
    logger.info("notified %s: %s", block_slug, event)
    return True
