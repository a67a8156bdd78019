"""The evaluation report people read: one self-contained HTML page (inline SVG charts, images as data:
URIs, no script, nothing fetched), from the evaluate stage's results.

`render_report` takes the results as values; `render_report_from_dir` reads what the evaluate stage
wrote (metrics.json, by_mask_ratio.csv and the PNGs) so that a later stage (register, with the gate's
decision) renders the same page with its own sections added.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
PERCEPTUAL_METRICS = ("lpips", "lpips_masked", "fid")
TABLE_II_COLUMNS = ("l1", "psnr", "ssim", "lpips", "fid", "l1_masked", "psnr_masked", "ssim_masked", "lpips_masked")
LOWER_IS_BETTER = {"l1", "l1_masked", "lpips", "lpips_masked", "fid"}
CHART_METHODS = ("end_to_end", "gt_mask", "telea", "navier_stokes", "occluded_input")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.champion{color:#666}
.unavailable{color:#a05a00;font-style:italic}.ok{color:#2a7d2a}.bad{color:#b00020;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
img{image-rendering:pixelated;max-width:100%}.note{color:#555;font-size:.9em}"""

# Wall-clock figures live apart from metrics.json, whose content depends only on models and data.
LATENCY_FILE = "latency.json"
# metrics.json photographs.by_object: per object fill, the mask's IoU and the PSNR inside the object.
PHOTOGRAPH_OBJECT_COLUMNS = ("samples", "iou", "end_to_end.psnr_masked", "telea.psnr_masked", "occluded_input.psnr_masked")


@dataclass(frozen=True)
class Figure:
    title: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Champion:
    """The current champion's recorded results, shown beside the candidate's."""

    label: str                                             # e.g. "champion v3"
    metrics: Mapping[str, Any]                             # its metrics.json
    bins: Sequence[Mapping[str, Any]] | None = None        # its by_mask_ratio.csv rows
    note: str = ""                                         # e.g. that it was tested on other data


@dataclass(frozen=True)
class ReportInputs:
    metrics: Mapping[str, Any]
    bins: Sequence[Mapping[str, Any]]
    figures: Sequence[Figure] = field(default_factory=tuple)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _float(value: Any) -> float | None:
    """A number from JSON or CSV text; None for blanks, NaN and anything else."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _cell(value: Any, digits: int = 4) -> str:
    """A number to `digits` places (integers as they are), "–" for nothing, other text escaped."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        return str(value)
    number = _float(value)
    if number is None:
        return "–" if isinstance(value, float) else _e(value)
    return f"{number:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped text or numbers, or HTML when `raw`."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell if raw else _cell(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def line_chart(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float | None]],
               y_label: str = "", width: int = 420, height: int = 250) -> str:
    """One line per series over categorical x positions; a point per known value (class "mark")."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values or not categories:
        return ""
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    left, right, top, bottom = 52, 12, 26, 62
    plot_w, plot_h = width - left - right, height - top - bottom
    x = lambda i: left + plot_w * (i + 0.5) / len(categories)  # noqa: E731
    y = lambda v: top + plot_h * (high - v) / (high - low)  # noqa: E731
    parts = [f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>',
             f'<rect class="axis" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>']
    for tick in (low + pad, (low + high) / 2, high - pad):
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" text-anchor="end" font-size="10">{tick:.3g}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top + plot_h / 2:.0f}" font-size="10" text-anchor="middle" '
                     f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{_e(y_label)}</text>')
    for i, category in enumerate(categories):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 13}" text-anchor="middle" font-size="9">'
                     f'{_e(category)}</text>')
    for s, (name, vs) in enumerate(series.items()):
        colour = COLOURS[s % len(COLOURS)]
        points = [(x(i), y(v), v, categories[i]) for i, v in enumerate(vs) if v is not None and i < len(categories)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline class="mark" points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        for px, py, v, category in points:
            parts.append(f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                         f'<title>{_e(name)} {_e(category)}: {v:.4f}</title></circle>')
        lx, ly = left + (s % 3) * 112, top + plot_h + 28 + (s // 3) * 13
        parts.append(f'<rect class="legend" x="{lx}" y="{ly - 8}" width="9" height="9" fill="{colour}"/>'
                     f'<text x="{lx + 12}" y="{ly}" font-size="10">{_e(name)}</text>')
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{_e(title)}">{"".join(parts)}</svg>')


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_width(png: bytes) -> int:
    """Width from the PNG header (IHDR), 0 when it is not a PNG."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _figure(figure: Figure, min_width: int = 520) -> str:
    """The image embedded; small ones (64 px faces) shown enlarged, pixels kept sharp."""
    caption = f"<figcaption>{_e(figure.caption)}</figcaption>" if figure.caption else ""
    width = png_width(figure.png)
    size = f' width="{min(1100, max(width, min_width))}"' if width else ""
    return f'<figure><img src="{png_data_uri(figure.png)}" alt="{_e(figure.title)}"{size}>{caption}</figure>'


def _availability(metrics: Mapping[str, Any]) -> dict[str, str | None]:
    """metric -> None when it was computed, else the reason it was not."""
    perceptual = metrics.get("perceptual", {})
    reasons: dict[str, str | None] = {}
    for name, record in (("lpips", perceptual.get("lpips")), ("fid", perceptual.get("fid"))):
        available = isinstance(record, Mapping) and record.get("available", False)
        reasons[name] = None if available else (record or {}).get("reason", "not computed")
        reasons[f"{name}_masked"] = reasons[name]
    return reasons


def _bin_value(row: Mapping[str, Any], method: str, metric: str) -> float | None:
    return _float(row.get(f"{method}.{metric}"))


def _overall_value(metrics: Mapping[str, Any], method: str, metric: str) -> float | None:
    if metric in IMAGE_METRICS:
        return _float(metrics.get(method, {}).get(metric))
    perceptual = metrics.get("perceptual", {})
    kind = "fid" if metric == "fid" else "lpips"
    record = perceptual.get(kind, {})
    return _float(record.get("overall", {}).get(method, {}).get(metric)) if isinstance(record, Mapping) else None


def _table_ii(inputs: ReportInputs, champion: Champion | None) -> str:
    """Paper 000's Table II for the end-to-end model: rows are mask-ratio bins and the overall mean,
    columns the metrics over the whole image and inside the mask; the champion's value under each."""
    reasons = _availability(inputs.metrics)
    columns = [c for c in TABLE_II_COLUMNS]
    header = "".join(f"<th>{_e(c)}{' ↓' if c in LOWER_IS_BETTER else ' ↑'}</th>" for c in columns)
    champion_bins = {str(row.get("mask_ratio_bin")): row for row in (champion.bins or [])} if champion else {}

    def cells(value_of: Any, champion_value_of: Any) -> str:
        out = []
        for column in columns:
            if reasons.get(column):
                out.append('<td class="unavailable">unavailable</td>')
                continue
            text = _cell(value_of(column))
            if champion is not None:
                text += f'<br><span class="champion">{_cell(champion_value_of(column))}</span>'
            out.append(f"<td>{text}</td>")
        return "".join(out)

    rows = []
    for row in inputs.bins:
        label = str(row.get("mask_ratio_bin"))
        theirs = champion_bins.get(label, {})
        rows.append(f"<tr><td>{_e(label)}</td><td>{_cell(row.get('samples'))}</td>"
                    + cells(lambda c, r=row: _bin_value(r, "end_to_end", c),
                            lambda c, r=theirs: _bin_value(r, "end_to_end", c)) + "</tr>")
    rows.append(f"<tr><th>overall</th><th>{_cell(inputs.metrics.get('test_samples'))}</th>"
                + cells(lambda c: _overall_value(inputs.metrics, "end_to_end", c),
                        lambda c: _overall_value(champion.metrics, "end_to_end", c) if champion else None) + "</tr>")
    legend = (f'<p class="note">Each cell: the candidate; under it, in grey, {_e(champion.label)}. {_e(champion.note)}</p>'
              if champion else '<p class="note">No champion in the registry yet: the candidate alone.</p>')
    missing = "".join(f'<p class="unavailable">{_e(name.upper())} unavailable: {_e(reasons[name])}</p>'
                      for name in ("lpips", "fid") if reasons.get(name))
    return (f"<table><tr><th>mask ratio</th><th>samples</th>{header}</tr>{''.join(rows)}</table>"
            f"{legend}{missing}")


def _bin_charts(inputs: ReportInputs, champion: Champion | None) -> str:
    reasons = _availability(inputs.metrics)
    labels = [str(row.get("mask_ratio_bin")) for row in inputs.bins]
    charts = []
    for metric in (*IMAGE_METRICS, "lpips", "lpips_masked", "fid"):
        if reasons.get(metric):
            continue
        series: dict[str, list[float | None]] = {}
        for method in CHART_METHODS:
            values = [_bin_value(row, method, metric) for row in inputs.bins]
            if any(v is not None for v in values):
                series[method] = values
        if champion and champion.bins:
            by_label = {str(row.get("mask_ratio_bin")): row for row in champion.bins}
            values = [_bin_value(by_label.get(label, {}), "end_to_end", metric) for label in labels]
            if any(v is not None for v in values):
                series[f"{champion.label}: end_to_end"] = values
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        charts.append(line_chart(f"{metric} by mask ratio", labels, series, direction))
    return f'<div class="charts">{"".join(c for c in charts if c)}</div>'


def _methods_table(metrics: Mapping[str, Any], methods: Mapping[str, str]) -> str:
    rows = [[description, *[metrics[m].get(c) for c in IMAGE_METRICS]] for m, description in methods.items()
            if m in metrics]
    return table(["method", *IMAGE_METRICS], rows)


def _segmentation(metrics: Mapping[str, Any]) -> str:
    """One row per metric, one column per mask variant: as the segmenter is configured, with no
    clean-up, and with paper 003's opening."""
    variants = {"as configured": metrics.get("segmentation", {})}
    for name, values in (metrics.get("segmentation_cleanup") or {}).items():
        kernel = name.removeprefix("opening_")
        variants["no clean-up" if name == "none" else f"opening {kernel}×{kernel}"] = values
    names: list[str] = []
    for values in variants.values():
        names.extend(k for k in values if k not in names)
    rows = [[name, *[values.get(name) for values in variants.values()]] for name in names]
    note = ('<p class="note">iou, dice, pixel_accuracy, mask_ssim: the occluder mask, per image, averaged; '
            "*_background / *_face / *_occluder, miou, mean_dice, pixel_accuracy_classes: three classes, "
            "pooled over all test pixels (paper 000).</p>")
    return table(["metric", *variants], rows) + note


def _grouped(metrics: Mapping[str, Any], key: str, first: str) -> str:
    groups = metrics.get(key) or {}
    if not groups:
        return ""
    methods = list(next(iter(groups.values())))
    rows = []
    for group, per_method in groups.items():
        for method in methods:
            values = per_method.get(method, {})
            rows.append([group, values.get("samples"), method, *[values.get(c) for c in IMAGE_METRICS]])
    return table([first, "samples", "method", *IMAGE_METRICS], rows)


def _latency(metrics: Mapping[str, Any]) -> str:
    record = metrics.get("latency")
    if not record:
        return ""
    rows = [[key.removeprefix("batch_"), value.get("median_ms"), value.get("images_per_second"), value.get("repeats")]
            for key, value in record.items() if key.startswith("batch_")]
    machine = ", ".join(f"{k}: {v}" for k, v in (record.get("machine") or {}).items() if v is not None)
    return (table(["batch size", "median ms per batch", "images per second", "repeats"], rows)
            + f'<p class="note">{_e(record.get("note", ""))}. {_e(machine)}; images '
              f'{_e("x".join(str(s) for s in record.get("image_size", [])))} px.</p>')


PROGRESSIVE_PAIRS = (("gt_mask", "gt_mask_progressive"), ("end_to_end", "end_to_end_progressive"))
PROGRESSIVE_METRICS = ("psnr_masked", "ssim_masked", "l1_masked")


def _progressive(inputs: ReportInputs) -> str:
    """Paper 004's progressive reconstruction beside one-shot inpainting: per bin, overall, a chart,
    and the ms per image of each (from latency.json)."""
    metrics = inputs.metrics
    record = metrics.get("progressive")
    if not record:
        return ""
    columns = [(method, name) for name in PROGRESSIVE_METRICS for pair in PROGRESSIVE_PAIRS for method in pair]
    header = ["mask ratio", "samples", *[f"{method} {name}" for method, name in columns]]
    rows = [[row.get("mask_ratio_bin"), row.get("samples"), *[_bin_value(row, m, n) for m, n in columns]]
            for row in inputs.bins]
    rows.append(["overall", metrics.get("test_samples"), *[_overall_value(metrics, m, n) for m, n in columns]])
    labels = [str(row.get("mask_ratio_bin")) for row in inputs.bins]
    chart = line_chart("psnr_masked by mask ratio: one-shot and progressive", labels,
                       {method: [_bin_value(row, method, "psnr_masked") for row in inputs.bins]
                        for pair in PROGRESSIVE_PAIRS for method in pair}, "higher is better")
    settings = (f'<p class="note">Dilation kernel {_e(record.get("kernel"))}; predicting again while the hole covers '
                f'at least {_e(record.get("min_hole_ratio"))} of the image, at most {_e(record.get("max_steps"))} '
                f'predictions. gt_mask: ground-truth mask; end_to_end: the segmenter\'s.</p>')
    latency = (metrics.get("latency") or {}).get("progressive")
    timing = ""
    if latency:
        per_image, slowdown, steps = latency.get("ms_per_image", {}), latency.get("slowdown", {}), record.get("mean_steps", {})
        timing = (table(["mask", "one-shot ms/image", "progressive ms/image", "slowdown", "mean predictions/image"],
                        [[m, per_image.get(m), per_image.get(f"{m}_progressive"), slowdown.get(m), steps.get(m)]
                         for m, _ in PROGRESSIVE_PAIRS])
                  + f'<p class="note">{_e(latency.get("note", ""))}.</p>')
    return settings + table(header, rows) + f'<div class="charts">{chart}</div>' + timing


SAME_IDENTITY_SCORES = ("psnr_masked", "ssim_masked", "l1_masked")


def _same_identity(metrics: Mapping[str, Any]) -> str:
    """Paper 001's synthetic same-identity test: a row per method, local LPIPS or why it is missing,
    seconds per image (from latency.json); or why the test was skipped."""
    record = metrics.get("same_identity")
    if not record:
        return ""
    about = ('<p>Synthetic people rendered several times: view 0 occluded, views 1..K clean as the person\'s '
             "references. It measures what the references add inside the occluder: the fine-tuned inpainter "
             "alone against its latent optimised without and with their prior (paper 001's enc, baseline and "
             "prior).</p>")
    if "skipped" in record:
        return about + f'<p class="unavailable">Skipped: {_e(record["skipped"])}</p>'
    seconds = ((metrics.get("latency") or {}).get("same_identity") or {}).get("seconds_per_image", {})
    scores = record.get("scores", {})
    reason = next((row.get("local_lpips") for row in scores.values() if isinstance(row.get("local_lpips"), str)), None)
    rows = [[_e(record.get("methods", {}).get(method, method)), *[_cell(row.get(k)) for k in SAME_IDENTITY_SCORES],
             '<span class="unavailable">unavailable</span>' if reason else _cell(row.get("local_lpips")),
             _cell(seconds.get(method))]
            for method, row in scores.items()]
    header = [*[f"{k} {'↓' if k in LOWER_IS_BETTER else '↑'}" for k in SAME_IDENTITY_SCORES], "local_lpips ↓",
              "seconds/image"]
    ratios = record.get("mask_ratios") or [0, 0]
    settings = (f'<p class="note">{_e(record.get("people"))} people at {_e(record.get("resolution"))} px, '
                f'{_e(record.get("references"))} references each, occluders over {ratios[0]:.0%}-{ratios[1]:.0%} '
                f'of the image; {_e((record.get("settings") or {}).get("steps"))} Adam steps per image. Scores '
                "inside the ground-truth occluder.</p>")
    missing = f'<p class="unavailable">Local LPIPS unavailable: {_e(reason)}</p>' if reason else ""
    return about + settings + table(["method", *header], rows, raw=True) + missing


def _checks(metrics: Mapping[str, Any]) -> str:
    items = "".join(f'<li class="{"ok" if ok else "bad"}">{"✔" if ok else "✘"} {_e(name)}</li>'
                    for name, ok in (metrics.get("checks") or {}).items())
    return f"<ul>{items}</ul>" if items else ""


def render_report(inputs: ReportInputs, *, title: str = "De-occlusion evaluation", champion: Champion | None = None,
                  extra_sections: Sequence[tuple[str, str]] = (), methods: Mapping[str, str] | None = None) -> str:
    """The whole page. `extra_sections` are (title, HTML body) pairs placed after the summary (e.g. the
    promotion gate's decision); `champion`'s recorded values appear beside the candidate's."""
    metrics = inputs.metrics
    methods = methods or metrics.get("methods") or {m: m for m in CHART_METHODS if m in metrics}
    about = metrics.get("about", {})
    summary = " · ".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in about.items())
    sections: list[tuple[str, str]] = [("Summary", f"<p>{summary}</p><p>Test split: {_cell(metrics.get('test_samples'))} "
                                        "images. Masked metrics are inside the ground-truth occluder; images in [0, 1], "
                                        "PSNR in dB.</p>")]
    sections += list(extra_sections)
    sections.append(("Inpainting by mask ratio (paper 000, Table II): end to end", _table_ii(inputs, champion)))
    sections.append(("Per-bin charts", _bin_charts(inputs, champion)))
    sections.append(("Every method, overall", _methods_table(metrics, methods)))
    sections.append(("Progressive reconstruction (paper 004): with and without", _progressive(inputs)))
    sections.append(("Same identity: plain inpainting, latent optimisation, reference-guided (paper 001)",
                     _same_identity(metrics)))
    figures = {figure.title: figure for figure in inputs.figures}
    if "samples" in figures:
        sections.append(("Samples", _figure(figures.pop("samples"))))
    sections.append(("Segmentation (predicted occluder vs ground truth)", _segmentation(metrics)))
    if "gradcam" in figures:
        sections.append(("Grad-CAM of the segmenter, per class", _figure(figures.pop("gradcam"))))
    sections.append(("End to end by occluder type", _grouped(metrics, "by_occluder", "occluder")))
    if "photographs" in metrics:
        photographs = metrics["photographs"]
        by_object = ""
        if photographs.get("by_object"):   # metrics written before the set reported per object have none
            by_object = ("<p>By object (IoU of the predicted mask; PSNR inside the object):</p>"
                         + table(["object", *PHOTOGRAPH_OBJECT_COLUMNS],
                                 [[fill, *[row.get(c) for c in PHOTOGRAPH_OBJECT_COLUMNS]]
                                  for fill, row in photographs["by_object"].items()]))
        sections.append(("Photograph set", f"<p>{_cell(photographs.get('samples'))} real photographs with a pasted "
                                           "object.</p>" + _methods_table(photographs, methods) + by_object))
    sections.append(("Latency and throughput of the deocclusion model", _latency(metrics)))
    sections.append(("Checks", _checks(metrics)))
    sections += [(figure.title, _figure(figure)) for figure in figures.values()]
    body = "".join(f"<section><h2>{_e(name)}</h2>{content}</section>\n" for name, content in sections if content)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>\n{body}</body></html>\n")


def read_bins(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_report_inputs(evaluation_dir: Path) -> ReportInputs:
    """What the evaluate stage wrote under `evaluation_dir` (reports/eval)."""
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    latency = evaluation_dir / LATENCY_FILE
    if latency.is_file():
        metrics["latency"] = json.loads(latency.read_text())
    bins = read_bins(evaluation_dir / "by_mask_ratio.csv")
    figures = [Figure(name, (evaluation_dir / f"{name}.png").read_bytes(), caption)
               for name, caption in (("samples", "Columns: occluded input | predicted mask | output | ground truth; "
                                                 "test images spread over mask ratios, then photographs."),
                                     ("gradcam", "Columns: occluded input, then one Grad-CAM map per class."))
               if (evaluation_dir / f"{name}.png").is_file()]
    return ReportInputs(metrics, bins, figures)


def render_report_from_dir(evaluation_dir: Path, *, title: str = "De-occlusion evaluation",
                           champion: Champion | None = None, extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    return render_report(read_report_inputs(evaluation_dir), title=title, champion=champion,
                         extra_sections=extra_sections)
