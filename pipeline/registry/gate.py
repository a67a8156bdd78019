"""The promotion gate as pure functions: floors against baselines, a paired bootstrap against the
champion, and the decision. Numbers in, a frozen decision out; no MLflow, no files.

A version is `champion` only when it meets every floor (it beats every baseline on every floor metric,
on the test split and on the photograph set, and its masks reach the photograph set's minimum IoU) and,
when there is a champion, either the paired bootstrap interval of its per-image improvement on the
primary metric has a lower bound above `min_improvement`, or the champion, re-scored on the candidate's
photograph set, breaks a photograph floor the candidate meets. Anything else is `challenger`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

CHAMPION, CHALLENGER = "champion", "challenger"
LOWER_IS_BETTER = frozenset({"l1", "l1_masked"})


def greater_is_better(metric: str) -> bool:
    """`psnr_masked` or `end_to_end.psnr_masked`: higher is better but for the L1 errors."""
    return metric.rpartition(".")[2] not in LOWER_IS_BETTER


MINIMUM = "minimum"   # the `baseline` of a floor that is a level to reach, not another method's score


@dataclass(frozen=True)
class FloorCheck:
    """The candidate against one baseline on one metric, overall on one split (`test`, or `photographs`:
    the photograph set); with baseline `minimum`, `baseline_value` is a level the value must reach."""

    metric: str
    baseline: str
    value: float
    baseline_value: float
    split: str = "test"

    def __post_init__(self) -> None:
        if self.baseline == MINIMUM and not greater_is_better(self.metric):
            raise ValueError(f"a minimum floor needs a metric where higher is better, not {self.metric}")

    @property
    def passed(self) -> bool:
        if math.isnan(self.value) or math.isnan(self.baseline_value):
            return False
        if self.baseline == MINIMUM:
            return self.value >= self.baseline_value
        return self.value > self.baseline_value if greater_is_better(self.metric) else self.value < self.baseline_value

    @property
    def _where(self) -> str:
        return "" if self.split == "test" else f"{self.split}: "

    @property
    def label(self) -> str:
        return f"{self._where}{self.metric} vs {self.baseline}"

    def describe(self) -> str:
        sign = ">=" if self.baseline == MINIMUM else ">" if greater_is_better(self.metric) else "<"
        verdict = "ok" if self.passed else "BROKEN"
        return f"{self._where}{self.metric} {self.value:.4f} {sign} {self.baseline} {self.baseline_value:.4f}: {verdict}"


def check_floors(metrics: Mapping[str, Mapping[str, float]], candidate: str, baselines: Sequence[str],
                 floor_metrics: Sequence[str], split: str = "test") -> tuple[FloorCheck, ...]:
    """One check per (baseline, metric) from evaluation metrics {method: {metric: value}}; a missing
    value is a KeyError naming it."""
    checks = []
    prefix = "" if split == "test" else f"{split}."
    for baseline in baselines:
        for metric in floor_metrics:
            for method in (candidate, baseline):
                if metric not in metrics.get(method, {}):
                    raise KeyError(f"no evaluation metric {prefix}{method}.{metric}")
            checks.append(FloorCheck(metric, baseline, float(metrics[candidate][metric]),
                                     float(metrics[baseline][metric]), split))
    return tuple(checks)


def check_photograph_floors(photographs: Mapping[str, Mapping[str, float]] | None, candidate: str,
                            min_iou: float | None, baselines: Sequence[str],
                            floor_metrics: Sequence[str]) -> tuple[FloorCheck, ...]:
    """The photograph set's floors from its metrics {method: {metric: value}, "segmentation": {"iou": ...}}:
    the masks' mean IoU with the pasted objects at least `min_iou` (None: not checked), then one check
    per (baseline, metric). No photograph metrics while a floor asks for them is a KeyError."""
    if min_iou is None and not (baselines and floor_metrics):
        return ()
    if photographs is None:
        raise KeyError("no evaluation metrics for the photograph set (photographs), which the photograph floors need")
    checks = []
    if min_iou is not None:
        if "iou" not in photographs.get("segmentation", {}):
            raise KeyError("no evaluation metric photographs.segmentation.iou")
        checks.append(FloorCheck("segmentation.iou", MINIMUM, float(photographs["segmentation"]["iou"]), float(min_iou),
                                 "photographs"))
    return (*checks, *check_floors(photographs, candidate, baselines, floor_metrics, "photographs"))


@dataclass(frozen=True)
class PairedComparison:
    """Candidate against champion on the same images: the mean per-image improvement (positive is
    better, whatever the metric's direction) and its percentile bootstrap interval."""

    metric: str
    samples: int
    candidate_mean: float
    champion_mean: float
    mean_improvement: float
    lower: float
    upper: float
    level: float
    resamples: int

    def describe(self) -> str:
        return (f"{self.metric}: improvement {self.mean_improvement:+.4f}, {self.level:.0%} CI "
                f"[{self.lower:+.4f}, {self.upper:+.4f}] over {self.samples} paired images "
                f"(candidate {self.candidate_mean:.4f}, champion {self.champion_mean:.4f})")


def bootstrap_interval(differences: np.ndarray, resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of `differences` (N,) over `resamples` resamples with replacement."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or len(differences) == 0:
        raise ValueError(f"need a non-empty 1-D array of differences, got shape {differences.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 x N indices at a time
        count = min(1000, resamples - start)
        indices = rng.integers(0, len(differences), size=(count, len(differences)))
        means[start:start + count] = differences[indices].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_comparison(metric: str, candidate: Mapping[str, float], champion: Mapping[str, float], resamples: int,
                      level: float, seed: int) -> PairedComparison:
    """Per-image scores {sample id: value} of both models; only the images both were scored on count."""
    shared = sorted(set(candidate) & set(champion))
    if not shared:
        raise ValueError(f"{metric}: candidate and champion share no scored image")
    ours = np.array([candidate[s] for s in shared], dtype=np.float64)
    theirs = np.array([champion[s] for s in shared], dtype=np.float64)
    improvement = ours - theirs if greater_is_better(metric) else theirs - ours
    lower, upper = bootstrap_interval(improvement, resamples, level, seed)
    return PairedComparison(metric, len(shared), float(ours.mean()), float(theirs.mean()), float(improvement.mean()),
                            lower, upper, level, resamples)


@dataclass(frozen=True)
class GateDecision:
    alias: str
    reason: str
    floors: tuple[FloorCheck, ...]
    comparison: PairedComparison | None
    champion_version: str | None
    min_improvement: float
    champion_floors: tuple[FloorCheck, ...] = ()   # the champion's, re-scored on the candidate's photograph set

    @property
    def floors_passed(self) -> bool:
        return all(check.passed for check in self.floors)

    @property
    def broken_floors(self) -> tuple[FloorCheck, ...]:
        return tuple(check for check in self.floors if not check.passed)

    @property
    def champion_broken_floors(self) -> tuple[FloorCheck, ...]:
        return tuple(check for check in self.champion_floors if not check.passed)

    def tags(self) -> dict[str, str]:
        """What the version records: the decision, its reason, the floors and the interval."""
        tags = {"gate.decision": self.alias, "gate.reason": self.reason[:4000],
                "gate.floors_passed": str(self.floors_passed).lower(),
                "gate.floors_broken": ", ".join(c.label for c in self.broken_floors) or "none",
                "gate.min_improvement": repr(self.min_improvement),
                "gate.compared_with": self.champion_version or "none"}
        if self.champion_floors:
            tags["gate.champion_floors_broken"] = ", ".join(c.label for c in self.champion_broken_floors) or "none"
        if self.comparison is not None:
            c = self.comparison
            tags.update({"gate.metric": c.metric, "gate.mean_improvement": repr(c.mean_improvement),
                         "gate.ci_lower": repr(c.lower), "gate.ci_upper": repr(c.upper), "gate.ci_level": repr(c.level),
                         "gate.paired_samples": str(c.samples), "gate.resamples": str(c.resamples)})
        return tags


def decide(floors: tuple[FloorCheck, ...], comparison: PairedComparison | None, champion_version: str | None,
           min_improvement: float, champion_floors: tuple[FloorCheck, ...] = ()) -> GateDecision:
    """`champion` only with every floor met and, against a champion, a lower bound above `min_improvement`
    or a champion that breaks one of `champion_floors` (its own photograph floors, re-scored on the candidate's photograph set)."""
    floors, champion_floors = tuple(floors), tuple(champion_floors)
    broken = [check for check in floors if not check.passed]
    if broken:
        reason = "floor broken: " + "; ".join(check.describe() for check in broken)
        return GateDecision(CHALLENGER, reason, floors, comparison, champion_version, min_improvement, champion_floors)
    if champion_version is None:
        if floors:
            baselines = sorted({check.baseline for check in floors})
            reason = (f"no champion yet; beats {' and '.join(baselines)} on all {len(floors)} promotion floor checks "
                      f"(params.yaml promotion:, not evaluate's quality floors)")
        else:
            reason = "no champion yet; params.yaml promotion: sets no floor checks, so the first candidate is promoted"
        return GateDecision(CHAMPION, reason, floors, None, None, min_improvement)
    if comparison is None:
        raise ValueError(f"a champion (version {champion_version}) exists but no paired comparison was made")
    decision = partial(GateDecision, floors=floors, comparison=comparison, champion_version=champion_version,
                       min_improvement=min_improvement, champion_floors=champion_floors)
    champion_broken = [check for check in champion_floors if not check.passed]
    if champion_broken:
        reason = (f"version {champion_version}, the champion, re-scored on this version's photograph set breaks "
                  f"floors this version meets: " + "; ".join(check.describe() for check in champion_broken)
                  + f" (against it: {comparison.describe()})")
        return decision(alias=CHAMPION, reason=reason)
    if comparison.lower > min_improvement:
        reason = f"beats version {champion_version}: {comparison.describe()} > {min_improvement}"
        return decision(alias=CHAMPION, reason=reason)
    reason = (f"not clearly better than version {champion_version}: {comparison.describe()}; the lower bound must "
              f"exceed {min_improvement}")
    return decision(alias=CHALLENGER, reason=reason)
