"""Great Expectations suites over the manifest plus per-image facts measured while reading the files.

One suite per source kind (`data.source`): the kinds share the checks on files and columns and
differ where their datasets do. A synthetic or `faces` sample has a clean face apart from its
occluded image and a mask ratio inside data.mask_ratio_min..max; a `labelled` sample is its own
clean face (`clean_path == image_path`, occluder type `labelled`) with whatever occluder its label
map holds; a `masks` sample's ratio is its mask's, from the mask set. Ingested kinds also carry
sources.csv, the facts the ingest recorded per source file (EXIF rotation applied, perceptual hash,
source path), checked here too. The suite runs through a Checkpoint whose action writes Data Docs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.dataset import SPLITS, read_manifest
from pipeline.data.facts import FILE_KEYS, file_hashes, file_stats, read_facts, sample_facts
from pipeline.errors import DeoccludeError

SUITE_PREFIX = "deocclude_"
KINDS = ("synthetic", "faces", "labelled", "masks")
SOURCES_FILE = "sources.csv"        # written by pipeline.ingest next to the manifest
INGEST_RECORD = "ingest.json"
DOCS_SITE = "deocclude"
EXIF_ORIENTATION = 0x0112
INGESTED_OCCLUDER_TYPES = ("labelled", "mask_set")   # what only the labelled and masks kinds write


class DataValidationError(DeoccludeError, RuntimeError):
    """The dataset failed its expectations; the message names each failure with example rows."""


def suite_name(kind: str) -> str:
    return f"{SUITE_PREFIX}{kind}"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    kind: str
    failures: list[dict[str, Any]]   # {"expectation", "column", "examples"}
    result: dict[str, Any]           # Great Expectations' validation result as JSON
    docs_index: Path | None = None   # the Data Docs site's index.html, when written

    @property
    def suite(self) -> str:
        return suite_name(self.kind)

    def describe(self, manifest_path: Path) -> str:
        lines = [f"{manifest_path}: {len(self.failures)} expectation(s) of suite {self.suite} failed"]
        for failure in self.failures:
            target = f"({failure['column']})" if failure["column"] else ""
            examples = ", ".join(failure["examples"]) or "no row-level examples"
            lines.append(f"  - {failure['expectation']}{target}: {examples}")
        return "\n".join(lines)


def _inspect_image(path: Path, keep_pixels: bool) -> dict[str, Any]:
    facts: dict[str, Any] = {"readable": False, "mode": None, "width": -1, "height": -1, "upright": False, "array": None}
    try:
        with Image.open(path) as image:
            image.load()
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
            facts.update(readable=True, mode=image.mode, width=image.width, height=image.height, upright=orientation == 1,
                         array=np.asarray(image) if keep_pixels else None)
    except (OSError, ValueError, SyntaxError):
        pass
    return facts


def _image_facts(root: Path, row: dict[str, str], recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the files of one manifest row hold: decodable, mode, size, alpha, EXIF orientation,
    mask binary and aligned, label values allowed and agreeing with the mask. Facts recorded when
    the files were written (facts.jsonl) stand for files whose size and mtime, or else sha256,
    still match; any other file is decoded and measured here."""
    if (recorded is not None and recorded.get("stats") == file_stats(root, row) and all(recorded["stats"].values())
            and set(recorded.get("files") or {}) == set(FILE_KEYS)):
        return {**recorded["facts"], "sha256_matches_file": recorded["files"]["image_path"] == row["sha256"]}
    hashes = file_hashes(root, row)
    if recorded is not None and recorded.get("files") == hashes and all(hashes.values()):
        return {**recorded["facts"], "sha256_matches_file": hashes["image_path"] == row["sha256"]}
    image = _inspect_image(root / row["image_path"], keep_pixels=False)
    clean = _inspect_image(root / row["clean_path"], keep_pixels=False)
    mask = _inspect_image(root / row["mask_path"], keep_pixels=True)
    labels = _inspect_image(root / row["label_path"], keep_pixels=True)
    return sample_facts(row, image, clean, mask, labels, hashes["image_path"])


def read_sources(root: Path) -> pd.DataFrame | None:
    """sources.csv as the ingest wrote it, every value as text (so a malformed one stays visible)."""
    path = root / SOURCES_FILE
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        return pd.DataFrame(list(csv.DictReader(handle)), dtype=object)


def measure_files(root: Path, rows: list[dict[str, str]], sources: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per manifest row with the facts read from its files (and, for an ingested dataset,
    its sources.csv row as `source_*` columns), ready for the suite."""
    recorded = read_facts(root)
    # Hashing and decoding release the GIL: threads keep every core reading.
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        facts = list(pool.map(lambda row: _image_facts(root, row, recorded.get(row["id"])), rows, chunksize=64))
    measured = [{**row, "width": int(row["width"]), "height": int(row["height"]), "mask_ratio": float(row["mask_ratio"]),
                 **row_facts} for row, row_facts in zip(rows, facts)]
    frame = pd.DataFrame(measured)
    if sources is None:
        return frame
    recorded = sources.rename(columns={c: f"source_{c}" if c != "id" and not c.startswith("source_") else c
                                       for c in sources.columns})
    recorded["source_row"] = True
    frame = frame.merge(recorded.drop_duplicates("id"), on="id", how="left", suffixes=("", "_recorded"))
    frame["source_row"] = frame["source_row"].eq(True)
    frame["source_path"] = frame["source_path"].where(frame["source_path"].fillna("").astype(str) != "", None)
    return frame


def _common(resolution: int) -> list[Any]:
    """What every kind's dataset must satisfy: the files decode, agree with each other and the manifest."""
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="image_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="image_mode", value_set=["RGB"]),   # no alpha, no palette, 8-bit
        gxe.ExpectColumnValuesToBeBetween(column="image_width", min_value=resolution, max_value=resolution),
        gxe.ExpectColumnValuesToBeBetween(column="image_height", min_value=resolution, max_value=resolution),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="image_width"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="image_height"),
        gxe.ExpectColumnValuesToBeInSet(column="image_upright", value_set=[True]),  # EXIF rotation applied, none left
        gxe.ExpectColumnValuesToBeInSet(column="clean_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="clean_mode", value_set=["RGB"]),
        gxe.ExpectColumnValuesToBeInSet(column="clean_matches_size", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_binary", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_matches_size", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_ratio_matches_file", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="label_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="label_values_allowed", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="label_matches_size", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="mask_matches_labels", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="sha256_matches_file", value_set=[True]),
        gxe.ExpectColumnValuesToNotBeNull(column="occluder_type"),
    ]


def _composited(mask_ratio_range: tuple[float, float]) -> list[Any]:
    """Synthetic and faces: an occluder drawn over a separate clean face, its size in the params' range."""
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeInSet(column="clean_is_image", value_set=[False]),
        gxe.ExpectColumnValuesToNotBeInSet(column="occluder_type", value_set=list(INGESTED_OCCLUDER_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="mask_ratio", min_value=mask_ratio_range[0], max_value=mask_ratio_range[1]),
    ]


def _sources(exif_rotation_allowed: bool) -> list[Any]:
    """sources.csv's facts: one row per sample naming a distinct source file, EXIF rotation a
    boolean (only faces may be turned upright), the 256-bit perceptual hash as 64 hex digits."""
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeInSet(column="source_row", value_set=[True]),
        gxe.ExpectColumnValuesToNotBeNull(column="source_path"),
        gxe.ExpectColumnValuesToBeUnique(column="source_path"),
        gxe.ExpectColumnValuesToBeInSet(column="source_exif_rotated",
                                        value_set=["True", "False"] if exif_rotation_allowed else ["False"]),
        gxe.ExpectColumnValuesToMatchRegex(column="source_phash", regex=r"^[0-9a-f]{64}$"),
    ]


def _synthetic(mask_ratio_range: tuple[float, float]) -> list[Any]:
    return _composited(mask_ratio_range)


def _faces(mask_ratio_range: tuple[float, float]) -> list[Any]:
    return _composited(mask_ratio_range) + _sources(exif_rotation_allowed=True)


def _labelled(mask_ratio_range: tuple[float, float]) -> list[Any]:
    """A labelled photograph is its own clean face; its occluder is whatever its label map says."""
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeInSet(column="clean_is_image", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="occluder_type", value_set=["labelled"]),
        gxe.ExpectColumnValuesToBeBetween(column="mask_ratio", min_value=0.0, max_value=1.0, strict_max=True),
    ] + _sources(exif_rotation_allowed=False)


def _masks(mask_ratio_range: tuple[float, float]) -> list[Any]:
    """A mask set's ratios are its own: each mask hides something and not everything."""
    import great_expectations as gx

    gxe = gx.expectations
    return [
        gxe.ExpectColumnValuesToBeInSet(column="clean_is_image", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="occluder_type", value_set=["mask_set"]),
        gxe.ExpectColumnValuesToBeBetween(column="mask_ratio", min_value=0.0, max_value=1.0, strict_min=True,
                                          strict_max=True),
    ] + _sources(exif_rotation_allowed=False)


SUITES: dict[str, Callable[[tuple[float, float]], list[Any]]] = {
    "synthetic": _synthetic, "faces": _faces, "labelled": _labelled, "masks": _masks}


def build_suite(kind: str, resolution: int, mask_ratio_range: tuple[float, float]) -> Any:
    """The expectation suite for a dataset of `kind` (synthetic, faces, labelled, masks)."""
    import great_expectations as gx

    if kind not in SUITES:
        raise ValueError(f"no validation suite for source kind {kind!r}; known: {', '.join(SUITES)}")
    suite = gx.ExpectationSuite(name=suite_name(kind))
    for expectation in _common(resolution) + SUITES[kind](mask_ratio_range):
        suite.add_expectation(expectation)
    return suite


def dataset_kind(root: Path) -> str:
    """The kind an ingested dataset records in ingest.json; synthetic when there is none."""
    record = root / INGEST_RECORD
    if record.is_file():
        return str(json.loads(record.read_text()).get("kind", "synthetic"))
    return "synthetic"


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


def _docs_site(docs_dir: Path) -> dict[str, Any]:
    return {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}


def validate_dataset(root: Path, resolution: int, mask_ratio_range: tuple[float, float], max_examples: int = 5,
                     kind: str | None = None, docs_dir: Path | None = None) -> ValidationOutcome:
    """Run the suite of `kind` (default: the kind ingest.json records, else synthetic) over the
    dataset at root through a Checkpoint; with docs_dir, its action writes the Data Docs site
    there (replacing what was there). Never raises for bad data, reports it instead."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    kind = kind or dataset_kind(root)
    if kind not in SUITES:
        raise ValueError(f"no validation suite for source kind {kind!r}; known: {', '.join(SUITES)}")
    rows = read_manifest(root)
    frame = measure_files(root, rows, read_sources(root) if kind != "synthetic" else None)
    # Ephemeral: nothing but the Data Docs site is written, and no GE project lands in git.
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    suite = build_suite(kind, resolution, mask_ratio_range)
    actions = []
    if docs_dir is not None:
        shutil.rmtree(docs_dir, ignore_errors=True)   # one validation per site: the latest
        context.add_data_docs_site(DOCS_SITE, _docs_site(docs_dir))
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    batch_definition = (context.data_sources.add_pandas("dataset")
                        .add_dataframe_asset(name="manifest")
                        .add_batch_definition_whole_dataframe("manifest"))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_manifest", data=batch_definition, suite=context.suites.add(suite)))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{suite.name}_checkpoint", validation_definitions=[definition], actions=actions,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]}))
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame})
    result_json = next(iter(checkpoint_result.run_results.values())).to_json_dict()
    failures = _failures(result_json, max_examples)
    docs_index = docs_dir / "index.html" if docs_dir is not None and (docs_dir / "index.html").is_file() else None
    return ValidationOutcome(success=bool(checkpoint_result.success) and not failures, kind=kind, failures=failures,
                             result=result_json, docs_index=docs_index)


def validation_pages(docs_dir: Path) -> list[Path]:
    """The Data Docs pages of the validation results (one per run of the checkpoint)."""
    return sorted((docs_dir / "validations").rglob("*.html")) if (docs_dir / "validations").is_dir() else []

