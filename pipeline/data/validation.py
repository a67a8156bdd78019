"""Great Expectations suite over the manifest plus per-image facts measured while reading the files."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.dataset import SPLITS, read_manifest, sha256_file
from pipeline.errors import DeoccludeError

SUITE_NAME = "deocclude_dataset"


class DataValidationError(DeoccludeError, RuntimeError):
    """The dataset failed its expectations; the message names each failure with example rows."""


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    failures: list[dict[str, Any]]   # {"expectation", "column", "examples"}
    result: dict[str, Any]           # Great Expectations' validation result as JSON

    def describe(self, manifest_path: Path) -> str:
        lines = [f"{manifest_path}: {len(self.failures)} expectation(s) failed"]
        for failure in self.failures:
            target = f"({failure['column']})" if failure["column"] else ""
            examples = ", ".join(failure["examples"]) or "no row-level examples"
            lines.append(f"  - {failure['expectation']}{target}: {examples}")
        return "\n".join(lines)


def _inspect_image(path: Path, mode_expected: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"readable": False, "mode": None, "actual_width": -1, "actual_height": -1, "array": None}
    try:
        with Image.open(path) as image:
            image.load()
            facts.update(readable=True, mode=image.mode, actual_width=image.width, actual_height=image.height,
                         array=np.asarray(image) if mode_expected == "L" else None)
    except (OSError, ValueError, SyntaxError):
        pass
    return facts


def measure_files(root: Path, rows: list[dict[str, str]]) -> pd.DataFrame:
    """One row per manifest row with the facts read from its files, ready for the suite."""
    measured = []
    for row in rows:
        image = _inspect_image(root / row["image_path"], "RGB")
        clean = _inspect_image(root / row["clean_path"], "RGB")
        mask = _inspect_image(root / row["mask_path"], "L")
        mask_array = mask.pop("array")
        image.pop("array"), clean.pop("array")
        binary = mask_array is not None and mask_array.ndim == 2 and bool(np.isin(mask_array, (0, 255)).all())
        measured_ratio = float((mask_array > 127).mean()) if binary else -1.0
        image_file = root / row["image_path"]
        measured.append({
            **row,
            "width": int(row["width"]), "height": int(row["height"]), "mask_ratio": float(row["mask_ratio"]),
            "image_readable": image["readable"], "image_mode": image["mode"] or "unreadable",
            "image_width": image["actual_width"], "image_height": image["actual_height"],
            "clean_readable": clean["readable"], "clean_mode": clean["mode"] or "unreadable",
            "clean_matches_size": (clean["actual_width"], clean["actual_height"]) == (image["actual_width"], image["actual_height"]),
            "mask_readable": mask["readable"],
            "mask_binary": binary,
            "mask_matches_size": (mask["actual_width"], mask["actual_height"]) == (image["actual_width"], image["actual_height"]),
            "mask_ratio_matches_file": binary and abs(measured_ratio - float(row["mask_ratio"])) < 1e-4,
            "sha256_matches_file": image_file.is_file() and sha256_file(image_file) == row["sha256"],
        })
    return pd.DataFrame(measured)


def build_suite(resolution: int, mask_ratio_range: tuple[float, float]) -> Any:
    import great_expectations as gx

    gxe = gx.expectations
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="image_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="image_mode", value_set=["RGB"]),
        gxe.ExpectColumnValuesToBeBetween(column="image_width", min_value=resolution, max_value=resolution),
        gxe.ExpectColumnValuesToBeBetween(column="image_height", min_value=resolution, max_value=resolution),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="image_width"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="image_height"),
        gxe.ExpectColumnValuesToBeInSet(column="clean_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="clean_mode", value_set=["RGB"]),
        gxe.ExpectColumnValuesToBeInSet(column="clean_matches_size", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_binary", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_matches_size", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="mask_ratio", min_value=mask_ratio_range[0], max_value=mask_ratio_range[1]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_ratio_matches_file", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="sha256_matches_file", value_set=[True]),
        gxe.ExpectColumnValuesToNotBeNull(column="occluder_type"),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def _failures(result: dict[str, Any], max_examples: int) -> list[dict[str, Any]]:
    failures = []
    for item in result["results"]:
        if item["success"]:
            continue
        config = item["expectation_config"]
        kwargs = config["kwargs"]
        column = kwargs.get("column") or ",".join(v for k, v in kwargs.items() if k in ("column_A", "column_B"))
        details = item.get("result", {}) or {}
        examples = []
        for index in (details.get("unexpected_index_list") or [])[:max_examples]:
            value = index.get(column, "") if isinstance(index, dict) else ""
            examples.append(f"id={index.get('id')} ({column}={value})" if isinstance(index, dict) else str(index))
        if not examples and details.get("observed_value") is not None:
            examples.append(f"observed {details['observed_value']}")
        if not examples and item.get("exception_info", {}).get("raised_exception"):
            examples.append(item["exception_info"]["exception_message"])
        failures.append({"expectation": config["type"], "column": column, "examples": examples})
    return failures


def validate_dataset(root: Path, resolution: int, mask_ratio_range: tuple[float, float],
                     max_examples: int = 5) -> ValidationOutcome:
    """Run the suite over the dataset at root; never raises for bad data, reports it instead."""
    import great_expectations as gx

    rows = read_manifest(root)
    frame = measure_files(root, rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch_definition = (context.data_sources.add_pandas("dataset")
                        .add_dataframe_asset(name="manifest")
                        .add_batch_definition_whole_dataframe("manifest"))
    suite = context.suites.add(build_suite(resolution, mask_ratio_range))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]})
    result_json = result.to_json_dict()
    failures = _failures(result_json, max_examples)
    return ValidationOutcome(success=bool(result.success) and not failures, failures=failures, result=result_json)


def render_html(outcome: ValidationOutcome, manifest_path: Path) -> str:
    """A self-contained HTML page of the validation result, one row per expectation."""
    rows = []
    for item in outcome.result["results"]:
        config = item["expectation_config"]
        kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
        details = item.get("result", {}) or {}
        unexpected = details.get("unexpected_index_list") or []
        examples = ", ".join(str(u.get("id")) if isinstance(u, dict) else str(u) for u in unexpected[:10])
        status = "pass" if item["success"] else "FAIL"
        rows.append(f"<tr class='{status.lower()}'><td>{status}</td><td>{html.escape(config['type'])}</td>"
                    f"<td><code>{html.escape(json.dumps(kwargs))}</code></td>"
                    f"<td>{details.get('unexpected_count', '')}</td><td>{html.escape(examples)}</td></tr>")
    verdict = "passed" if outcome.success else "FAILED"
    stats = outcome.result.get("statistics", {})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Dataset validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
tr.fail{{background:#fdd}}tr.pass{{background:#efe}}</style></head><body>
<h1>Dataset validation {verdict}</h1>
<p>Manifest: <code>{html.escape(str(manifest_path))}</code> &mdash; suite <code>{SUITE_NAME}</code>:
{stats.get('successful_expectations', 0)} of {stats.get('evaluated_expectations', 0)} expectations met.</p>
<table><tr><th>status</th><th>expectation</th><th>arguments</th><th>unexpected rows</th><th>example ids</th></tr>
{''.join(rows)}
</table></body></html>
"""
