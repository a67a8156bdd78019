"""A flow run's parameters as params.yaml edits, the way `dvc exp run -S key=value` makes them.

The edit stays in params.yaml (comments kept) so that `dvc repro`, dvc.lock and git all see the
values the run trained with; the same overrides on the next trigger change nothing.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"inpainter": {"epochs": 3}} and {"inpainter.epochs": 3} both become {"inpainter.epochs": 3}."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not name.endswith(("arch_kwargs", "loss_weights")):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _set(document: Any, dotted: str, value: Any) -> bool:
    *parents, leaf = dotted.split(".")
    node = document
    for part in parents:
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"cannot set '{dotted}': '{part}' is not a mapping")
    if leaf in node and node[leaf] == value:
        return False
    node[leaf] = value
    return True


def apply_overrides(params_file: Path, profile: str | None = None, overrides: dict[str, Any] | None = None) -> list[str]:
    """Write `profile` and `overrides` into params_file; returns the keys whose values changed.

    The result must load as a Config, else params_file is left as it was and the ConfigError says why."""
    from pipeline.config import ConfigError, load_config

    wanted = {**({"profile": profile} if profile else {}), **flatten(overrides or {})}
    if not wanted:
        return []
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 110
    yaml.representer.add_representer(type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = yaml.load(params_file.read_text())
    changed = [key for key, value in wanted.items() if _set(document, key, value)]
    if not changed:
        return []
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    descriptor, staged = tempfile.mkstemp(prefix=".params.", suffix=".yaml", dir=params_file.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(buffer.getvalue())
        try:
            load_config(staged, env={})
        except ConfigError as error:
            raise ConfigError(str(error).replace(str(Path(staged).resolve()), f"{params_file} with {wanted}")) from None
        os.replace(staged, params_file)
    finally:
        Path(staged).unlink(missing_ok=True)
    return changed
