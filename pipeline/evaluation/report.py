"""Report artefacts written to paths given by the caller: image grids, tables, Markdown."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def save_grid(columns: Sequence[torch.Tensor], path: Path, scale: int = 2) -> Path:
    """One row per sample, one column per tensor (N, C, H, W) in [0, 1]; 1-channel masks shown grey."""
    rendered = []
    for column in columns:
        column = column.detach().float().clamp(0, 1)
        if column.shape[1] == 1:
            column = column.expand(-1, 3, -1, -1)
        rendered.append(column)
    rows = torch.cat(rendered, dim=3)                       # (N, 3, H, W * columns)
    grid = torch.cat(list(rows), dim=1)                     # (3, H * N, W * columns)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_csv(rows: Sequence[dict[str, object]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields.extend(key for key in row if key not in fields)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
