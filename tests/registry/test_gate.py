"""The promotion gate's pure logic on synthetic numbers."""

import numpy as np
import pytest

from pipeline.registry.gate import (CHALLENGER, CHAMPION, FloorCheck, bootstrap_interval, check_floors,
                                    check_photograph_floors, decide, paired_comparison)

METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")


def evaluation(end_to_end_ssim=0.90):
    """Evaluation metrics where end_to_end beats both baselines on everything but, maybe, ssim."""
    return {
        "end_to_end": {"l1": 0.02, "psnr": 30.0, "ssim": end_to_end_ssim, "l1_masked": 0.10, "psnr_masked": 20.0,
                       "ssim_masked": 0.60},
        "occluded_input": {"l1": 0.05, "psnr": 20.0, "ssim": 0.819, "l1_masked": 0.50, "psnr_masked": 6.0,
                           "ssim_masked": 0.10},
        "telea": {"l1": 0.03, "psnr": 27.0, "ssim": 0.85, "l1_masked": 0.15, "psnr_masked": 17.0, "ssim_masked": 0.50},
    }


def test_floors_compare_each_metric_in_its_direction():
    assert FloorCheck("l1", "telea", 0.02, 0.03).passed
    assert not FloorCheck("l1", "telea", 0.03, 0.02).passed
    assert FloorCheck("psnr", "telea", 30.0, 27.0).passed
    assert not FloorCheck("ssim", "telea", 0.85, 0.85).passed  # a tie does not beat the baseline
    assert not FloorCheck("ssim", "telea", float("nan"), 0.5).passed


def test_first_version_below_a_floor_is_never_champion():
    floors = check_floors(evaluation(end_to_end_ssim=0.796), "end_to_end", ["occluded_input", "telea"], METRICS)
    assert len(floors) == 12
    decision = decide(floors, None, None, 0.0)
    assert decision.alias == CHALLENGER and not decision.floors_passed
    assert [(c.metric, c.baseline) for c in decision.broken_floors] == [("ssim", "occluded_input"), ("ssim", "telea")]
    assert "ssim 0.7960 > occluded_input 0.8190: BROKEN" in decision.reason
    assert decision.tags()["gate.floors_passed"] == "false"


def test_first_version_above_every_floor_is_champion():
    decision = decide(check_floors(evaluation(), "end_to_end", ["occluded_input", "telea"], METRICS), None, None, 0.0)
    assert decision.alias == CHAMPION and decision.comparison is None
    assert decision.reason.startswith("no champion yet; beats occluded_input and telea on all 12 promotion floor checks")
    unguarded = decide([], None, None, 0.0)
    assert unguarded.alias == CHAMPION and "sets no floor checks" in unguarded.reason


def test_only_the_listed_floor_metrics_count():
    floors = check_floors(evaluation(end_to_end_ssim=0.796), "end_to_end", ["occluded_input"], ["psnr_masked"])
    assert decide(floors, None, None, 0.0).alias == CHAMPION


def test_a_missing_metric_is_named():
    with pytest.raises(KeyError, match="telea_gt_mask.ssim"):
        check_floors(evaluation(), "end_to_end", ["telea_gt_mask"], ["ssim"])


def scores(values):
    return {f"s{i:03d}": float(v) for i, v in enumerate(values)}


def test_a_candidate_no_better_than_the_champion_stays_challenger():
    rng = np.random.default_rng(0)
    champion = rng.normal(20, 2, size=48)
    candidate = champion + rng.normal(0, 0.5, size=48)  # noise around zero improvement
    comparison = paired_comparison("psnr_masked", scores(candidate), scores(champion), 2000, 0.95, seed=1)
    assert comparison.lower < 0 < comparison.upper
    floors = check_floors(evaluation(), "end_to_end", ["occluded_input", "telea"], METRICS)
    decision = decide(floors, comparison, "3", 0.0)
    assert decision.alias == CHALLENGER and "not clearly better than version 3" in decision.reason
    assert decision.tags()["gate.compared_with"] == "3" and float(decision.tags()["gate.ci_lower"]) == comparison.lower


def test_identical_models_stay_challenger():
    same = scores(np.linspace(10, 30, 24))
    comparison = paired_comparison("psnr_masked", same, same, 500, 0.95, seed=0)
    assert comparison.lower == comparison.upper == 0.0
    floors = check_floors(evaluation(), "end_to_end", ["occluded_input"], METRICS)
    assert decide(floors, comparison, "1", 0.0).alias == CHALLENGER


def test_a_clearly_better_candidate_is_promoted_but_not_past_a_broken_floor():
    rng = np.random.default_rng(0)
    champion = rng.normal(20, 2, size=48)
    candidate = champion + 1.5 + rng.normal(0, 0.5, size=48)
    comparison = paired_comparison("psnr_masked", scores(candidate), scores(champion), 2000, 0.95, seed=1)
    assert comparison.lower > 1.0
    good = check_floors(evaluation(), "end_to_end", ["occluded_input", "telea"], METRICS)
    assert decide(good, comparison, "3", 0.0).alias == CHAMPION
    assert decide(good, comparison, "3", 5.0).alias == CHALLENGER  # below the minimum improvement asked for
    broken = check_floors(evaluation(end_to_end_ssim=0.5), "end_to_end", ["occluded_input", "telea"], METRICS)
    assert decide(broken, comparison, "3", 0.0).alias == CHALLENGER


def test_lower_is_better_metrics_count_a_drop_as_improvement():
    champion = scores(np.full(30, 0.10))
    candidate = scores(np.full(30, 0.07))
    comparison = paired_comparison("l1_masked", candidate, champion, 200, 0.9, seed=0)
    assert comparison.mean_improvement == pytest.approx(0.03) and comparison.lower == pytest.approx(0.03)


def test_only_shared_images_are_paired():
    comparison = paired_comparison("psnr", {"a": 2.0, "b": 4.0, "c": 9.0}, {"a": 1.0, "b": 3.0, "d": 0.0}, 100, 0.95, 0)
    assert comparison.samples == 2 and comparison.mean_improvement == 1.0
    with pytest.raises(ValueError, match="share no scored image"):
        paired_comparison("psnr", {"a": 1.0}, {"b": 1.0}, 100, 0.95, 0)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    differences = np.random.default_rng(3).normal(1.0, 1.0, size=200)
    first = bootstrap_interval(differences, 3000, 0.95, seed=7)
    assert first == bootstrap_interval(differences, 3000, 0.95, seed=7)
    assert first[0] < differences.mean() < first[1]
    # the interval of the mean is about +-1.96 standard errors wide
    assert first[1] - first[0] == pytest.approx(2 * 1.96 * differences.std() / np.sqrt(200), rel=0.15)



def photographs(iou=0.58, psnr_masked=11.7):
    """The photograph set's metrics as evaluate writes them: the input stays at 9.1 dB inside the objects."""
    return {"segmentation": {"iou": iou, "dice": 0.65},
            "end_to_end": {"l1_masked": 0.21, "psnr_masked": psnr_masked, "ssim_masked": 0.22},
            "occluded_input": {"l1_masked": 0.30, "psnr_masked": 9.1, "ssim_masked": 0.17}}


PHOTO_METRICS = ("l1_masked", "psnr_masked", "ssim_masked")


def test_photograph_floors_ask_for_the_minimum_iou_and_beating_the_input_inside_the_object():
    floors = check_photograph_floors(photographs(), "end_to_end", 0.5, ["occluded_input"], PHOTO_METRICS)
    assert [(c.split, c.metric, c.baseline) for c in floors] == [
        ("photographs", "segmentation.iou", "minimum"), ("photographs", "l1_masked", "occluded_input"),
        ("photographs", "psnr_masked", "occluded_input"), ("photographs", "ssim_masked", "occluded_input")]
    assert all(c.passed for c in floors)
    assert check_photograph_floors(photographs(iou=0.5), "end_to_end", 0.5, [], [])[0].passed  # reached counts
    missed = check_photograph_floors(photographs(iou=0.49), "end_to_end", 0.5, [], [])[0]
    assert not missed.passed and missed.describe() == "photographs: segmentation.iou 0.4900 >= minimum 0.5000: BROKEN"
    worse = check_photograph_floors(photographs(psnr_masked=9.0), "end_to_end", None, ["occluded_input"], PHOTO_METRICS)
    assert [c.metric for c in worse if not c.passed] == ["psnr_masked"]
    assert check_photograph_floors(None, "end_to_end", None, [], PHOTO_METRICS) == ()   # nothing asked
    with pytest.raises(KeyError, match="photograph set"):
        check_photograph_floors(None, "end_to_end", 0.5, [], [])
    with pytest.raises(ValueError, match="higher is better"):
        FloorCheck("l1_masked", "minimum", 0.1, 0.2, "photographs")
    with pytest.raises(KeyError, match="photographs.telea.psnr_masked"):
        check_photograph_floors(photographs(), "end_to_end", None, ["telea"], ["psnr_masked"])


def test_a_candidate_missing_the_photographs_objects_is_never_champion():
    floors = (*check_floors(evaluation(), "end_to_end", ["occluded_input", "telea"], METRICS),
              *check_photograph_floors(photographs(iou=0.3), "end_to_end", 0.5, ["occluded_input"], PHOTO_METRICS))
    decision = decide(floors, None, None, 0.0)
    assert decision.alias == CHALLENGER and decision.tags()["gate.floors_broken"] == "photographs: segmentation.iou vs minimum"


def test_a_champion_that_breaks_a_photograph_floor_is_replaced_by_one_that_meets_it():
    rng = np.random.default_rng(0)
    champion = rng.normal(20, 2, size=48)
    worse = champion - 0.2 + rng.normal(0, 0.1, size=48)   # clearly worse on the synthetic split
    comparison = paired_comparison("psnr_masked", scores(worse), scores(champion), 2000, 0.95, seed=1)
    assert comparison.upper < 0
    floors = (*check_floors(evaluation(), "end_to_end", ["occluded_input"], METRICS),
              *check_photograph_floors(photographs(), "end_to_end", 0.5, ["occluded_input"], PHOTO_METRICS))
    broken_champion = check_photograph_floors(photographs(iou=0.49), "end_to_end", 0.5, ["occluded_input"], PHOTO_METRICS)
    decision = decide(floors, comparison, "1", 0.0, broken_champion)
    assert decision.alias == CHAMPION and decision.reason.startswith("version 1, the champion, re-scored on this")
    assert "photographs: segmentation.iou 0.4900 >= minimum 0.5000: BROKEN" in decision.reason
    assert decision.tags()["gate.champion_floors_broken"] == "photographs: segmentation.iou vs minimum"
    sound_champion = check_photograph_floors(photographs(iou=0.6), "end_to_end", 0.5, ["occluded_input"], PHOTO_METRICS)
    kept = decide(floors, comparison, "1", 0.0, sound_champion)
    assert kept.alias == CHALLENGER and kept.tags()["gate.champion_floors_broken"] == "none"
    # a candidate that breaks a floor itself is never promoted, whatever the champion breaks
    own_broken = (*floors, *check_photograph_floors(photographs(iou=0.4), "end_to_end", 0.5, [], []))
    assert decide(own_broken, comparison, "1", 0.0, broken_champion).alias == CHALLENGER
