import numpy as np
import pytest

from pipeline.data.synthetic import BACKGROUND, FACE, OCCLUDER, assign_splits, render_sample

WEIGHTS = {"face_mask": 1, "sunglasses": 1, "hand": 1, "hat": 1, "cup": 1, "strokes": 1, "box": 1}


def test_same_seed_and_index_render_the_same_sample():
    first = render_sample(7, 3, 48, WEIGHTS, (0.05, 0.5))
    second = render_sample(7, 3, 48, WEIGHTS, (0.05, 0.5))
    for name in ("occluded_image", "clean_image", "occluder_mask", "label_map"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.occluder_type == second.occluder_type


def test_another_seed_renders_another_face():
    assert not np.array_equal(render_sample(7, 3, 48, WEIGHTS, (0.05, 0.5)).clean_image,
                              render_sample(8, 3, 48, WEIGHTS, (0.05, 0.5)).clean_image)


@pytest.mark.parametrize("kind", sorted(WEIGHTS))
def test_ground_truth_is_exact_for_every_occluder(kind):
    for index in range(6):
        sample = render_sample(1, index, 64, {kind: 1.0}, (0.03, 0.6))
        mask = sample.occluder_mask > 0
        assert set(np.unique(sample.occluder_mask)) <= {0, 255}
        assert 0.03 <= sample.mask_ratio <= 0.6
        np.testing.assert_array_equal(sample.label_map == OCCLUDER, mask)
        np.testing.assert_array_equal(sample.occluded_image[~mask], sample.clean_image[~mask])
        assert (sample.label_map == FACE).any() and (sample.label_map == BACKGROUND).any()
        assert sample.occluder_type in (kind, "box")


def test_mask_ratio_range_is_respected_even_when_narrow():
    ratios = [render_sample(3, i, 64, WEIGHTS, (0.4, 0.45)).mask_ratio for i in range(10)]
    assert all(0.4 <= r <= 0.45 for r in ratios)


def test_splits_are_deterministic_and_never_empty():
    splits = assign_splits(10, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert splits == assign_splits(10, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 7, "val": 1, "test": 2}
    tiny = assign_splits(3, {"train": 0.98, "val": 0.01, "test": 0.01}, seed=5)
    assert sorted(tiny) == ["test", "train", "val"]
