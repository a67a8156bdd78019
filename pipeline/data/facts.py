"""Per-sample facts (decodable, mode, size, mask binary and aligned, label values...) recorded when
a dataset is written, keyed by the sha256 of each file they describe.

Validation reads them instead of decoding every file again: a file whose hash still matches is the
file the facts were measured on; any other is decoded and measured afresh. So a 30,000-image
manifest validates in seconds, and an edited or corrupted file is still caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.dataset import sha256_file

FACTS_FILE = "facts.jsonl"
# Sizes and mtimes differ on every write, so they live beside the facts in a file .dvcignore leaves
# out: the dataset's DVC hash (its version id) stays a function of its content alone.
STATS_FILE = "facts.stat.jsonl"
FILE_KEYS = ("image_path", "clean_path", "mask_path", "label_path")
LABEL_VALUES = (0, 1, 2)            # background, face, occluder
OCCLUDER_LABEL = 2


def inspected_array(array: np.ndarray) -> dict[str, Any]:
    """What reading back a PNG written from `array` finds: the same facts `_inspect_image` measures."""
    mode = "RGB" if array.ndim == 3 and array.shape[2] == 3 else "RGBA" if array.ndim == 3 else "L"
    return {"readable": True, "mode": mode, "width": int(array.shape[1]), "height": int(array.shape[0]),
            "upright": True, "array": array}


def sample_facts(row: dict[str, Any], image: dict[str, Any], clean: dict[str, Any], mask: dict[str, Any],
                 labels: dict[str, Any], image_sha256: str | None) -> dict[str, Any]:
    """The facts of one manifest row from its four inspected files (see `inspected_array`)."""
    size = (image["width"], image["height"])
    mask_array, label_array = mask["array"], labels["array"]
    binary = mask_array is not None and mask_array.ndim == 2 and bool(np.isin(mask_array, (0, 255)).all())
    measured_ratio = float((mask_array > 127).mean()) if binary else -1.0
    labels_allowed = (label_array is not None and label_array.ndim == 2
                      and bool(np.isin(label_array, LABEL_VALUES).all()))
    labels_aligned = labels["readable"] and (labels["width"], labels["height"]) == size
    return {
        "image_readable": image["readable"], "image_mode": image["mode"] or "unreadable",
        "image_width": image["width"], "image_height": image["height"], "image_upright": image["upright"],
        "clean_readable": clean["readable"], "clean_mode": clean["mode"] or "unreadable",
        "clean_matches_size": (clean["width"], clean["height"]) == size,
        "clean_is_image": row["clean_path"] == row["image_path"],
        "mask_readable": mask["readable"],
        "mask_binary": binary,
        "mask_matches_size": (mask["width"], mask["height"]) == size,
        "mask_ratio_matches_file": binary and abs(measured_ratio - float(row["mask_ratio"])) < 1e-4,
        "label_readable": labels["readable"],
        "label_values_allowed": labels_allowed,
        "label_matches_size": labels_aligned,
        "mask_matches_labels": bool(binary and labels_allowed and labels_aligned
                                    and ((mask_array > 127) == (label_array == OCCLUDER_LABEL)).all()),
        "sha256_matches_file": image_sha256 is not None and image_sha256 == row["sha256"],
    }


def file_hashes(root: Path, row: dict[str, Any]) -> dict[str, str | None]:
    return {key: sha256_file(root / row[key]) if (root / row[key]).is_file() else None for key in FILE_KEYS}


def file_stats(root: Path, row: dict[str, Any]) -> dict[str, list[int] | None]:
    """Size and modification time of each file: as git and DVC do, an unchanged stat stands for
    unchanged content; a changed one (a checkout, an edit) sends validation to the hashes."""
    stats: dict[str, list[int] | None] = {}
    for key in FILE_KEYS:
        try:
            status = (root / row[key]).stat()
            stats[key] = [status.st_size, status.st_mtime_ns]
        except OSError:
            stats[key] = None
    return stats


def record_facts(root: Path, row: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The facts of a row just written from `arrays` (keyed like FILE_KEYS), with its files' hashes."""
    hashes = file_hashes(root, row)
    inspected = {key: inspected_array(arrays[key]) for key in FILE_KEYS}
    facts = sample_facts(row, inspected["image_path"], inspected["clean_path"], inspected["mask_path"],
                         inspected["label_path"], hashes["image_path"])
    return {"id": row["id"], "files": hashes, "stats": file_stats(root, row), "facts": facts}


def write_facts(root: Path, records: list[dict[str, Any]]) -> Path:
    path = root / FACTS_FILE
    with open(path, "w", encoding="utf-8") as facts, open(root / STATS_FILE, "w", encoding="utf-8") as stats:
        for record in records:
            facts.write(json.dumps({k: v for k, v in record.items() if k != "stats"}, separators=(",", ":")) + "\n")
            stats.write(json.dumps({"id": record["id"], "stats": record.get("stats")}, separators=(",", ":")) + "\n")
    return path


def _read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if record}


def read_facts(root: Path) -> dict[str, dict[str, Any]]:
    """id -> recorded facts, with the files' stats where they were kept (a pulled or checked-out
    dataset has none: its hashes stand in); empty when the facts are missing or unreadable."""
    path = root / FACTS_FILE
    if not path.is_file():
        return {}
    try:
        records = _read_jsonl(path)
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}
    try:
        stats = _read_jsonl(root / STATS_FILE) if (root / STATS_FILE).is_file() else {}
    except (json.JSONDecodeError, KeyError, TypeError):
        stats = {}
    for identifier, record in records.items():
        record["stats"] = stats.get(identifier, {}).get("stats")
    return records
