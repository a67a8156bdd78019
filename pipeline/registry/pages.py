"""Self-contained pages for the registry: the gate report, the comparison page (HTML, inline SVG,
no script, no network) and the model card (Markdown). Text in, text out; callers write the files."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.registry.gate import MINIMUM, FloorCheck, GateDecision

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.ok{color:#2a7d2a}.bad{color:#b00020;font-weight:bold}
.decision{font-size:1.3em;padding:.5em;border-left:6px solid #888}svg{margin:.5em 0}
.charts{display:flex;flex-wrap:wrap;gap:1em}"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_number(cell)}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def bar_chart(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float | None]],
              width: int = 520, height: int = 240) -> str:
    """Grouped bars, one group per category, one colour per series; None draws no bar."""
    values = [v for vs in series.values() for v in vs if v is not None and not math.isnan(v)]
    if not values or not categories:
        return ""
    low, high = min(0.0, min(values)), max(0.0, max(values))
    span = (high - low) or 1.0
    left, bottom, top = 50, 40, 24
    plot_h, plot_w = height - bottom - top, width - left - 10
    y = lambda v: top + plot_h * (high - v) / span  # noqa: E731
    group_w = plot_w / len(categories)
    bar_w = group_w * 0.8 / max(1, len(series))
    parts = [f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>',
             f'<line x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#555"/>',
             f'<text x="{left - 4}" y="{y(high) + 4:.1f}" text-anchor="end" font-size="10">{high:.3g}</text>',
             f'<text x="{left - 4}" y="{y(low) + 4:.1f}" text-anchor="end" font-size="10">{low:.3g}</text>']
    for g, category in enumerate(categories):
        x0 = left + g * group_w + group_w * 0.1
        parts.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                     f'font-size="10">{_e(category)}</text>')
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g] if g < len(vs) else None
            if v is None or math.isnan(v):
                continue
            y0, y1 = sorted((y(0), y(v)))
            parts.append(f'<rect x="{x0 + s * bar_w:.1f}" y="{y0:.1f}" width="{bar_w * 0.95:.1f}" '
                         f'height="{max(y1 - y0, 0.5):.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                         f'<title>{_e(name)} {_e(category)}: {v:.4f}</title></rect>')
    for s, name in enumerate(series):
        parts.append(f'<rect x="{left + s * 130}" y="{height - 14}" width="10" height="10" '
                     f'fill="{COLOURS[s % len(COLOURS)]}"/><text x="{left + s * 130 + 14}" y="{height - 5}" '
                     f'font-size="11">{_e(name)}</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(parts)}</svg>'


def interval_chart(title: str, rows: Sequence[tuple[str, float, float, float]], width: int = 520) -> str:
    """Horizontal intervals (label, estimate, lower, upper) around a zero line."""
    if not rows:
        return ""
    height = 40 + 22 * len(rows)
    values = [v for _, *vs in rows for v in vs if not math.isnan(v)] + [0.0]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, right = 170, width - 20
    x = lambda v: left + (right - left) * (v - low) / span  # noqa: E731
    parts = [f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>',
             f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="24" y2="{height - 6}" stroke="#999" stroke-dasharray="3"/>']
    for i, (label, estimate, lower, upper) in enumerate(rows):
        cy = 34 + 22 * i
        colour = COLOURS[2] if lower > 0 else COLOURS[1] if upper < 0 else "#777"
        parts.append(f'<text x="{left - 6}" y="{cy + 4}" text-anchor="end" font-size="11">{_e(label)}</text>'
                     f'<line x1="{x(lower):.1f}" x2="{x(upper):.1f}" y1="{cy}" y2="{cy}" stroke="{colour}" stroke-width="3"/>'
                     f'<circle cx="{x(estimate):.1f}" cy="{cy}" r="4" fill="{colour}"><title>{estimate:+.4f} '
                     f'[{lower:+.4f}, {upper:+.4f}]</title></circle>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(parts)}</svg>'


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def bin_labels(edges: Sequence[float]) -> list[str]:
    return [f"{low:.0%}-{high:.0%}" for low, high in zip(edges[:-1], edges[1:])]


def bin_index(mask_ratio: float, edges: Sequence[float]) -> int | None:
    """The bin of `edges` a ratio falls in (the last one closed), None outside."""
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        if low <= mask_ratio < high or (index == len(edges) - 2 and mask_ratio == high):
            return index
    return None


def per_bin_means(scores: Mapping[str, float], mask_ratios: Mapping[str, float], edges: Sequence[float]) -> list[float | None]:
    sums = [[] for _ in range(len(edges) - 1)]
    for sample, value in scores.items():
        index = bin_index(mask_ratios.get(sample, float("nan")), edges)
        if index is not None:
            sums[index].append(value)
    return [sum(v) / len(v) if v else None for v in sums]


def floors_table(floors: Sequence[FloorCheck], whose: str) -> str:
    return table(["split", "metric", "baseline", whose, "baseline value", "verdict"],
                 [[c.split, c.metric, c.baseline, c.value, c.baseline_value,
                   ("reaches" if c.baseline == MINIMUM else "beats") if c.passed else "BROKEN"] for c in floors],
                 ["" if c.passed else "bad" for c in floors])


def decision_section(decision: GateDecision) -> str:
    css = "ok" if decision.alias == "champion" else "bad"
    parts = [f'<p class="decision"><span class="{css}">{_e(decision.alias)}</span>: {_e(decision.reason)}</p>',
             "<h2>Floors</h2>", floors_table(decision.floors, "candidate")]
    if decision.champion_floors:
        parts += [f"<h2>Champion version {_e(decision.champion_version)} on this version's photograph set</h2>",
                  floors_table(decision.champion_floors, "champion")]
    c = decision.comparison
    if c is not None:
        parts += [f"<h2>Against champion version {_e(decision.champion_version)}</h2>",
                  table(["metric", "paired images", "candidate mean", "champion mean", "mean improvement",
                         f"{c.level:.0%} CI lower", f"{c.level:.0%} CI upper", "resamples", "needed lower bound >"],
                        [[c.metric, c.samples, c.candidate_mean, c.champion_mean, c.mean_improvement, c.lower, c.upper,
                          c.resamples, decision.min_improvement]]),
                  interval_chart(f"per-image improvement in {c.metric} (paired bootstrap)",
                                 [(c.metric, c.mean_improvement, c.lower, c.upper)])]
    return "\n".join(parts)


def gate_section(version: str, metric: str, decision: GateDecision, ours: Mapping[str, Mapping[str, float]],
                 theirs: Mapping[str, Mapping[str, float]] | None, champion_source: str | None,
                 mask_ratios: Sequence[float], ids: Sequence[str], edges: Sequence[float]) -> str:
    """The gate's decision, floors, interval, and the paired primary metric by mask-ratio bin (HTML body)."""
    metric_name = metric.partition(".")[2]
    ratios = dict(zip(ids, mask_ratios))
    series = {f"version {version}": per_bin_means({s: v[metric_name] for s, v in ours.items()}, ratios, edges)}
    if theirs is not None:
        series[f"champion {decision.champion_version}"] = per_bin_means(
            {s: v[metric_name] for s, v in theirs.items()}, ratios, edges)
    body = [decision_section(decision)]
    if champion_source:
        body.append(f"<p>Champion scores: {_e(champion_source)}.</p>")
    body.append(bar_chart(f"{metric} by mask-ratio bin, paired test images", bin_labels(edges), series))
    return "\n".join(body)


def gate_page(name: str, version: str, section: str) -> str:
    """The gate's report on its own, when there is no evaluation report to put it in."""
    return page(f"{name} version {version}: promotion gate", section)


def model_card(name: str, version: str, metrics: Mapping[str, Any], decision: GateDecision, tags: Mapping[str, str],
               segmenter_arch: str, inpainter_arch: str, metric: str) -> str:
    """The version's model card: intended use, data version, metrics table, limits, the gate's decision."""
    methods = [m for m in ("end_to_end", "gt_mask", "telea", "telea_gt_mask", "occluded_input") if m in metrics]
    columns = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
    header = "| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)
    rows = "\n".join(f"| {m} | " + " | ".join(_number(metrics[m].get(c)) for c in columns) + " |" for m in methods)
    segmentation = metrics.get("segmentation", {})
    seg = ", ".join(f"{k} {v:.4f}" for k, v in segmentation.items() if isinstance(v, float))
    floors = "\n".join(f"- {c.describe()}" for c in decision.floors)
    if decision.champion_floors:
        floors += f"\n\nChampion version {decision.champion_version} on this version's photograph set:\n\n" + "\n".join(
            f"- {c.describe()}" for c in decision.champion_floors)
    comparison = f"- {decision.comparison.describe()}\n" if decision.comparison else ""
    return f"""# Model card: {name} version {version}

## Model

Segmenter `{segmenter_arch}` finds the occluder; inpainter `{inpainter_arch}`, fine-tuned on the
segmenter's predicted masks, paints the hidden face back; known pixels are kept from the input.
Served as an MLflow pyfunc: a DataFrame column `image` (base64 PNG/JPEG, any size) in, columns
`mask` and `image` (base64 PNG, same size) out.

## Intended use

De-occluding frontal face crops hidden in part by an object (masks, hands, glasses, hats, cups,
strokes, boxes) for research and for comparing de-occlusion methods. Not for identifying people,
for forensic use, or for any decision about a person: the painted pixels are a plausible guess,
not what was behind the occluder.

## Data

- data version (DVC hash of data/dataset): `{tags.get('data_version', '?')}`
- git commit: `{tags.get('git_commit', '?')}`; params hash: `{tags.get('params_hash', '?')}`; profile `{tags.get('profile', '?')}`
- test split: {metrics.get('test_samples', '?')} samples

## Metrics (test split; masked metrics inside the true occluder; L1 lower is better)

{header}
{rows}

Segmentation: {seg or 'n/a'}.

## Promotion gate: {decision.alias}

{decision.reason}

{floors}
{comparison}
## Limits

- Trained and tested on procedurally generated faces at the profile's resolution; real
  photographs, other poses, lighting and resolutions are out of distribution (see the evaluation
  report's photograph set).
- Large occluders (mask ratio above 50 %) leave little context: expect blurred or generic faces.
- A missed occluder pixel is kept as is: the inpainter only repaints what the segmenter masks.
- The primary metric `{metric}` and the floors measure pixel fidelity, not identity preservation.
"""


def compare_page(title: str, labels: Sequence[str], params_rows: Sequence[Sequence[Any]],
                 metric_rows: Sequence[Sequence[Any]], intervals: Sequence[tuple[str, float, float, float]],
                 bins: Mapping[str, Mapping[str, Sequence[float | None]]], bin_names: Sequence[str]) -> str:
    """Params that differ, every metric side by side, paired intervals, and one chart per binned metric."""
    body = ["<h2>Params that differ</h2>",
            table(["param", *labels], params_rows) if params_rows else "<p>No param differs.</p>"]
    if intervals:
        body += ["<h2>Paired bootstrap intervals (per-image improvement over the first)</h2>",
                 interval_chart("mean per-image improvement, 95 % CI", intervals)]
    if bins:
        body.append("<h2>By mask ratio</h2><div class=\"charts\">")
        body += [bar_chart(metric, bin_names, series) for metric, series in bins.items()]
        body.append("</div>")
    body += ["<h2>Every metric</h2>",
             table(["metric", *labels, *[f"{b} − {labels[0]}" for b in labels[1:]]], metric_rows)]
    return page(title, "\n".join(body))
