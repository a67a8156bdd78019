"""Drift of a dataset against a reference version: two-sample Kolmogorov-Smirnov tests per feature.

Features, one value per image (the occluded input the models see, at the current resolution):
- `lbp_00` .. `lbp_25`: the image's uniform local-binary-pattern histogram, P = 24 points on a
  radius of R = 8 pixels as paper 003 computes it (its section on the KS test), grayscale. The
  paper pools the codes of every pixel of every image into one KS test; pixels of one image are not
  independent samples, so with thousands of them any difference is "significant". Here the unit is
  the image: each of the 26 bins (24 + 1 uniform patterns and one for the rest) is the share of an
  image's pixels with that code, and each bin is its own KS test across images.
- `colour_r`, `colour_g`, `colour_b`: the image's mean of each RGB channel, in [0, 1];
  `saturation`: its mean HSV saturation.
- `mask_ratio`: the occluder's share of the image, from the manifest.

Each feature belongs to a group (lbp, colour, mask_ratio). A feature drifts when its p-value is
below `p_value` divided by the number of tests in its group (Bonferroni: 26 LBP bins tested at
0.01 each would call drift by chance one time in four) and, when `statistic` is set, its KS
statistic D is at least that. A group drifts when any of its features does.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.dataset import MANIFEST
from pipeline.errors import DeoccludeError

LBP_POINTS = 24     # paper 003: 24 sampling points ...
LBP_RADIUS = 8      # ... on a radius of 8 pixels
LBP_BINS = LBP_POINTS + 2   # 'uniform' codes: 0..P for the uniform patterns, P + 1 for all the others
COLOUR_FEATURES = ("colour_r", "colour_g", "colour_b", "saturation")
GROUPS = ("lbp", "colour", "mask_ratio")
NO_REFERENCE = "no reference"


class DriftError(DeoccludeError):
    """The reference dataset cannot be read; the message names it."""


class DriftDetected(DeoccludeError):
    """Drift was found and `drift.on_drift` is `fail`; the message names the features and the reference."""


def lbp_feature_names() -> list[str]:
    return [f"lbp_{code:02d}" for code in range(LBP_BINS)]


def feature_group(name: str) -> str:
    return "lbp" if name.startswith("lbp_") else "colour" if name in COLOUR_FEATURES else name


@dataclass(frozen=True)
class DatasetFiles:
    """A dataset's manifest rows and where each of its files is (a folder, or DVC's cache)."""

    id: str                                   # its DVC hash when known, else a digest of its manifest
    source: str                               # what a person reads: a path, or "data/dataset at HEAD"
    rows: list[dict[str, str]]
    locate: Callable[[str], Path] = field(repr=False)   # manifest relpath -> file on disk


def folder_dataset(root: Path, dataset_id: str, source: str | None = None) -> DatasetFiles:
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise DriftError(f"{manifest}: no manifest; a drift reference is a dataset folder holding {MANIFEST}")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return DatasetFiles(dataset_id, source or str(root), rows, lambda relpath: root / relpath)


def cached_dataset(cache: Path, dir_md5: str, source: str) -> DatasetFiles:
    """A directory DVC recorded as `dir_md5` (…/.dir), read from the local cache (files/md5/xx/rest)."""
    def cached(md5: str) -> Path:
        return cache / "files" / "md5" / md5[:2] / md5[2:]

    listing_file = cached(dir_md5 if dir_md5.endswith(".dir") else dir_md5 + ".dir")
    if not listing_file.is_file():
        raise DriftError(f"{source}: version {dir_md5} is not in the local DVC cache ({listing_file}); "
                         "`dvc pull` it, or set drift.reference to a dataset folder")
    listing = {entry["relpath"]: cached(entry["md5"]) for entry in json.loads(listing_file.read_text())}
    if MANIFEST not in listing or not listing[MANIFEST].is_file():
        raise DriftError(f"{source}: version {dir_md5} has no {MANIFEST} in the local DVC cache")
    with open(listing[MANIFEST], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return DatasetFiles(dir_md5, source, rows, lambda relpath: listing[relpath])


def sample_rows(rows: list[dict[str, str]], size: int, seed: int) -> list[dict[str, str]]:
    """At most `size` rows, the same ones for the same rows and seed (ordered by id)."""
    ordered = sorted(rows, key=lambda row: row["id"])
    if len(ordered) <= size:
        return ordered
    chosen = np.sort(np.random.default_rng(seed).choice(len(ordered), size, replace=False))
    return [ordered[index] for index in chosen]


def lbp_histogram(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (26,) share of the pixels with each uniform LBP code (P = 24, R = 8)."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(gray, LBP_POINTS, LBP_RADIUS, method="uniform")
    return np.bincount(codes.astype(np.int64).ravel(), minlength=LBP_BINS)[:LBP_BINS] / codes.size


def image_features(image: Image.Image, resolution: int) -> dict[str, float]:
    """One image's features: its LBP histogram bins, channel means and mean saturation."""
    rgb = image.convert("RGB")
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
    pixels = np.asarray(rgb, dtype=np.float64) / 255.0                        # (H, W, 3)
    saturation = np.asarray(rgb.convert("HSV"), dtype=np.float64)[..., 1] / 255.0
    histogram = lbp_histogram(np.asarray(rgb.convert("L")))
    return {**dict(zip(lbp_feature_names(), histogram.tolist())),
            "colour_r": float(pixels[..., 0].mean()), "colour_g": float(pixels[..., 1].mean()),
            "colour_b": float(pixels[..., 2].mean()), "saturation": float(saturation.mean())}


def dataset_features(dataset: DatasetFiles, resolution: int, sample: int, seed: int) -> dict[str, np.ndarray]:
    """Feature name -> one value per sampled image."""
    rows = sample_rows(dataset.rows, sample, seed)
    if not rows:
        raise DriftError(f"{dataset.source}: the manifest lists no images")
    per_image = []
    for row in rows:
        path = dataset.locate(row["image_path"])
        try:
            with Image.open(path) as image:
                values = image_features(image, resolution)
        except (OSError, ValueError, KeyError) as error:
            raise DriftError(f"{dataset.source}: {row['image_path']} (sample {row['id']}) cannot be read: {error}") from None
        per_image.append({**values, "mask_ratio": float(row["mask_ratio"])})
    return {name: np.array([values[name] for values in per_image]) for name in per_image[0]}


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float | None = 0.01      # below it (Bonferroni-corrected within the group): drift
    statistic: float | None = None    # when set, D must also reach it


@dataclass(frozen=True)
class FeatureTest:
    name: str
    group: str
    statistic: float        # KS D: the largest gap between the two empirical CDFs
    p_value: float
    drifted: bool
    reference_mean: float
    current_mean: float


def ks_tests(reference: dict[str, np.ndarray], current: dict[str, np.ndarray],
             thresholds: DriftThresholds) -> list[FeatureTest]:
    """Two-sample KS test per feature, each judged at its group's Bonferroni-corrected level."""
    from scipy.stats import ks_2samp

    names = [name for name in reference if name in current]
    group_sizes = {group: sum(feature_group(name) == group for name in names) for group in GROUPS}
    tests = []
    for name in names:
        group = feature_group(name)
        result = ks_2samp(reference[name], current[name])
        statistic, p_value = float(result.statistic), float(result.pvalue)
        drifted = ((thresholds.p_value is None or p_value < thresholds.p_value / group_sizes[group])
                   and (thresholds.statistic is None or statistic >= thresholds.statistic))
        tests.append(FeatureTest(name, group, statistic, p_value, bool(drifted), float(reference[name].mean()),
                                 float(current[name].mean())))
    return tests


def _group_summary(tests: list[FeatureTest], group: str, thresholds: DriftThresholds) -> dict[str, Any]:
    members = [test for test in tests if test.group == group]
    worst = max(members, key=lambda test: (test.statistic, -test.p_value))
    return {"drifted": any(test.drifted for test in members), "tests": len(members),
            "statistic": worst.statistic, "p_value": min(test.p_value for test in members), "worst_feature": worst.name,
            "drifted_features": [test.name for test in members if test.drifted],
            "p_value_threshold": None if thresholds.p_value is None else thresholds.p_value / len(members)}


def drift_report(reference: DatasetFiles | None, current: DatasetFiles, tests: list[FeatureTest],
                 thresholds: DriftThresholds, on_drift: str, sampled: dict[str, int], note: str = "") -> dict[str, Any]:
    """drift.json: a top-level `drifted` and one-line `summary` (what the retraining flow reads),
    then each group's and each feature's statistic, p-value and flag."""
    current_info = {"id": current.id, "source": current.source, "images": len(current.rows), "sampled": sampled.get("current", 0)}
    settings = {"on_drift": on_drift, "thresholds": {**asdict(thresholds), "correction": "bonferroni within each group"},
                "feature_set": "uniform LBP (P=24, R=8) histogram bins, RGB channel means, mean saturation, mask ratio"}
    if reference is None:
        return {"drifted": False, "verdict": NO_REFERENCE, "summary": f"{NO_REFERENCE}: {note}" if note else NO_REFERENCE,
                "reference": None, "current": current_info, "groups": {}, "features": {}, **settings}
    groups = {group: _group_summary(tests, group, thresholds) for group in GROUPS if any(t.group == group for t in tests)}
    drifted = [group for group, summary in groups.items() if summary["drifted"]]
    described = ", ".join(f"{group} ({groups[group]['worst_feature']}: D={groups[group]['statistic']:.3f}, "
                          f"p={groups[group]['p_value']:.2g})" for group in (drifted or list(groups)))
    against = f"reference {reference.source} ({reference.id})"
    summary = (f"drift in {described} against {against}" if drifted else f"no drift against {against}: {described}")
    return {"drifted": bool(drifted), "verdict": "drift" if drifted else "no drift", "summary": summary,
            "drifted_groups": drifted, "drifted_features": [t.name for t in tests if t.drifted],
            "reference": {"id": reference.id, "source": reference.source, "images": len(reference.rows),
                          "sampled": sampled.get("reference", 0)},
            "current": current_info, "groups": groups,
            "features": {t.name: {k: v for k, v in asdict(t).items() if k != "name"} for t in tests}, **settings}


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def drift_plots(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> dict[str, str]:
    """Group -> a base64 PNG comparing the two sides: the mean LBP histogram, colour and mask-ratio histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    lbp = lbp_feature_names()
    figure, axis = plt.subplots(figsize=(8, 3))
    codes = np.arange(LBP_BINS)
    axis.bar(codes - 0.2, [reference[n].mean() for n in lbp], 0.4, label="reference")
    axis.bar(codes + 0.2, [current[n].mean() for n in lbp], 0.4, label="current")
    axis.set(xlabel="uniform LBP code (P=24, R=8)", ylabel="mean share of pixels", title="LBP histogram")
    axis.legend()
    plots["lbp"] = _figure_png(figure)
    plt.close(figure)
    for group, names in (("colour", COLOUR_FEATURES), ("mask_ratio", ("mask_ratio",))):
        figure, axes = plt.subplots(1, len(names), figsize=(3 * len(names) + 1, 2.6), squeeze=False)
        for axis, name in zip(axes[0], names):
            bins = np.histogram_bin_edges(np.concatenate([reference[name], current[name]]), bins=20)
            axis.hist(reference[name], bins=bins, alpha=0.55, density=True, label="reference")
            axis.hist(current[name], bins=bins, alpha=0.55, density=True, label="current")
            axis.set_title(name)
        axes[0][0].legend()
        plots[group] = _figure_png(figure)
        plt.close(figure)
    return plots


def render_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    """A self-contained page: verdict, the two dataset versions, a table per group, the histograms."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape("" if value is None else str(value))

    def dataset_row(name: str, info: dict[str, Any] | None) -> str:
        if info is None:
            return f"<tr><th>{name}</th><td colspan=3>{NO_REFERENCE}</td></tr>"
        return (f"<tr><th>{name}</th><td><code>{cell(info['id'])}</code></td><td>{cell(info['source'])}</td>"
                f"<td>{info['sampled']} of {info['images']} images</td></tr>")

    sections = []
    for group, summary in report["groups"].items():
        rows = "".join(
            f"<tr class='{'drift' if test['drifted'] else 'ok'}'><td>{html.escape(name)}</td><td>{cell(test['statistic'])}</td>"
            f"<td>{cell(test['p_value'])}</td><td>{cell(test['reference_mean'])}</td><td>{cell(test['current_mean'])}</td>"
            f"<td>{'DRIFT' if test['drifted'] else 'ok'}</td></tr>"
            for name, test in report["features"].items() if test["group"] == group)
        image = f"<img alt='{group} histograms' src='data:image/png;base64,{plots[group]}'>" if group in plots else ""
        sections.append(
            f"<h2>{group}: {'DRIFT' if summary['drifted'] else 'no drift'}</h2>"
            f"<p>{summary['tests']} test(s), each at p &lt; {cell(summary['p_value_threshold'])}; largest D "
            f"{cell(summary['statistic'])} ({html.escape(summary['worst_feature'])}).</p>{image}"
            "<table><tr><th>feature</th><th>KS D</th><th>p-value</th><th>reference mean</th><th>current mean</th>"
            f"<th>verdict</th></tr>{rows}</table>")
    thresholds = report["thresholds"]
    also_d = "" if thresholds["statistic"] is None else f" and D &ge; {cell(thresholds['statistic'])}"
    verdict = {"drift": "DRIFT", "no drift": "no drift"}.get(report["verdict"], report["verdict"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Dataset drift: {html.escape(verdict)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}tr.drift{{background:#fdd}}tr.ok{{background:#efe}}</style>
</head><body>
<h1>Dataset drift: {html.escape(verdict)}</h1>
<p>{html.escape(report['summary'])}</p>
<table>{dataset_row('reference', report['reference'])}{dataset_row('current', report['current'])}</table>
<p>Two-sample Kolmogorov-Smirnov tests per image feature ({html.escape(report['feature_set'])}).
A feature drifts when p &lt; {cell(thresholds['p_value'])} / (tests in its group){also_d};
on drift the stage is set to <b>{html.escape(report['on_drift'])}</b>.</p>
{''.join(sections)}
</body></html>
"""
