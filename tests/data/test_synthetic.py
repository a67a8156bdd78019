import numpy as np
import pytest

from pipeline.data.synthetic import (
    BACKGROUND,
    FACE,
    OCCLUDER,
    TEXTURE_FILES,
    assign_splits,
    ratio_strata,
    render_identity,
    render_sample,
    stratified_mask_ratios,
)

WEIGHTS = {"face_mask": 1, "sunglasses": 1, "hand": 1, "hat": 1, "cup": 1, "strokes": 1, "box": 1}
PAPER_BINS = [(0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)]


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
    variants = {"cup": {"cup", "microphone", "phone"}, "strokes": {"strokes", "hair"}, "box": {"box", "patch"}}
    for index in range(6):
        sample = render_sample(1, index, 64, {kind: 1.0}, (0.03, 0.6))
        mask = sample.occluder_mask > 0
        assert set(np.unique(sample.occluder_mask)) <= {0, 255}
        assert 0.03 <= sample.mask_ratio <= 0.6
        np.testing.assert_array_equal(sample.label_map == OCCLUDER, mask)
        # Blur, noise and JPEG change the clean image too: outside the occluder the two stay identical.
        np.testing.assert_array_equal(sample.occluded_image[~mask], sample.clean_image[~mask])
        assert (sample.label_map == FACE).any() and (sample.label_map == BACKGROUND).any()
        assert sample.occluder_type in variants.get(kind, {kind}) | {"box"}


def test_mask_ratio_range_is_respected_even_when_narrow():
    ratios = [render_sample(3, i, 64, WEIGHTS, (0.4, 0.45)).mask_ratio for i in range(10)]
    assert all(0.4 <= r <= 0.45 for r in ratios)


def test_target_ratio_is_approached():
    ratios = [render_sample(3, i, 64, WEIGHTS, (0.2, 0.3), target_ratio=0.25).mask_ratio for i in range(8)]
    assert all(0.2 <= r < 0.3 for r in ratios)
    assert abs(np.mean(ratios) - 0.25) < 0.02


def test_strata_are_paper_000_bins():
    def rounded(strata):
        return [(round(low, 6), round(high, 6)) for low, high in strata]

    assert rounded(ratio_strata(0.01, 0.6)) == PAPER_BINS
    assert rounded(ratio_strata(0.03, 0.25)) == [(0.03, 0.1), (0.1, 0.2), (0.2, 0.25)]


def test_every_split_is_stratified_over_the_bins():
    splits = assign_splits(240, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=42)
    targets = stratified_mask_ratios(splits, 0.01, 0.6, seed=42)
    assert targets == stratified_mask_ratios(splits, 0.01, 0.6, seed=42)
    for split in ("train", "val", "test"):
        strata = [(round(low, 6), round(high, 6)) for (low, high, _), name in zip(targets, splits) if name == split]
        counts = [strata.count(b) for b in PAPER_BINS]
        assert max(counts) - min(counts) <= 1, (split, counts)
    assert all(low < target < high for low, high, target in targets)


def test_rendered_test_split_fills_every_bin():
    """What the generate stage does: each rendered sample lands in the bin its stratum names."""
    splits = assign_splits(60, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    targets = stratified_mask_ratios(splits, 0.01, 0.6, seed=3)
    counts = dict.fromkeys(PAPER_BINS, 0)
    for index, ((low, high, target), split) in enumerate(zip(targets, splits)):
        if split != "test":
            continue
        ratio = render_sample(3, index, 32, WEIGHTS, (low, high), target).mask_ratio
        assert low <= ratio < high
        counts[(round(low, 6), round(high, 6))] += 1
    assert all(count == 2 for count in counts.values())


def test_training_textures_hold_out_the_photograph_set():
    from pipeline.data.photographs import FACE_PHOTOS, OBJECT_PHOTOS

    held_out = {face.relative for face in FACE_PHOTOS} | {relative for _, relative in OBJECT_PHOTOS}
    assert not held_out & {relative for _, relative in TEXTURE_FILES}


def test_splits_are_deterministic_and_never_empty():
    splits = assign_splits(10, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert splits == assign_splits(10, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 7, "val": 1, "test": 2}
    tiny = assign_splits(3, {"train": 0.98, "val": 0.01, "test": 0.01}, seed=5)
    assert sorted(tiny) == ["test", "train", "val"]


def test_one_identity_renders_the_same_face_with_and_without_its_occluder():
    occluded = render_identity(5, identity=2, view=0, size=64, occluder_weights=WEIGHTS, mask_ratio_range=(0.2, 0.4))
    again = render_identity(5, identity=2, view=0, size=64, occluder_weights=WEIGHTS, mask_ratio_range=(0.2, 0.4))
    clean = render_identity(5, identity=2, view=0, size=64, occluder_weights=WEIGHTS, mask_ratio_range=(0.2, 0.4),
                            occluded=False)
    for name in ("occluded_image", "clean_image", "occluder_mask", "label_map"):
        np.testing.assert_array_equal(getattr(occluded, name), getattr(again, name))      # seeded, deterministic
    mask = occluded.occluder_mask > 0
    assert 0.1 < mask.mean() < 0.5
    np.testing.assert_array_equal(occluded.clean_image, clean.clean_image)
    np.testing.assert_array_equal(occluded.occluded_image[~mask], clean.occluded_image[~mask])
    assert not np.array_equal(occluded.occluded_image[mask], clean.occluded_image[mask])
    assert clean.mask_ratio == 0 and np.array_equal(clean.occluded_image, clean.clean_image)
    # Another view of the same person is another photograph of the same face; another person is another face.
    other_view = render_identity(5, identity=2, view=1, size=64, occluder_weights=WEIGHTS, mask_ratio_range=(0.2, 0.4),
                                 occluded=False)
    other_person = render_identity(5, identity=3, view=0, size=64, occluder_weights=WEIGHTS, mask_ratio_range=(0.2, 0.4),
                                   occluded=False)
    same_face = np.abs(other_view.clean_image.astype(int) - clean.clean_image).mean()
    other_face = np.abs(other_person.clean_image.astype(int) - clean.clean_image).mean()
    assert 0 < same_face and 0 < other_face


def test_real_faces_replace_drawn_ones_where_the_share_says(monkeypatch):
    """A face photograph (here a left-to-right ramp, so it is easy to see) is stretched over the face
    in the share of samples PHOTO_FACE_SHARE sets; drawn faces show no such ramp."""
    import pipeline.data.synthetic as synthetic

    ramp = np.tile(np.linspace(10, 250, 25, dtype=np.float32), (synthetic.FACE_PHOTO_COUNT, 25, 1))
    monkeypatch.setattr(synthetic, "face_photos", lambda: ramp)

    def left_right_gap(share: float) -> float:
        monkeypatch.setattr(synthetic, "PHOTO_FACE_SHARE", share)
        gaps = []
        for index in range(8):
            sample = render_sample(3, index, 64, {"box": 1.0}, (0.01, 0.05))
            face = sample.label_map == FACE
            columns = np.nonzero(face.any(axis=0))[0]
            middle = (columns.min() + columns.max()) / 2
            grey = sample.clean_image.mean(axis=2)
            xx = np.arange(64)[None, :].repeat(64, 0)
            gaps.append(abs(grey[face & (xx < middle)].mean() - grey[face & (xx > middle)].mean()))
        return float(np.mean(gaps))

    assert left_right_gap(1.0) > 3 * left_right_gap(0.0)


def test_black_and_white_cameras_keep_the_ground_truth_exact(monkeypatch):
    import pipeline.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "MONOCHROME_SHARE", 1.0)
    for index in range(4):
        sample = render_sample(5, index, 64, WEIGHTS, (0.1, 0.4))
        for image in (sample.occluded_image, sample.clean_image):
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        mask = sample.occluder_mask > 0
        np.testing.assert_array_equal(sample.occluded_image[~mask], sample.clean_image[~mask])
    monkeypatch.setattr(synthetic, "MONOCHROME_SHARE", 0.0)
    assert (render_sample(5, 0, 64, WEIGHTS, (0.1, 0.4)).clean_image.std(axis=2) > 0).any()


def test_boxes_are_photographic_or_one_plain_colour_and_patches_photographic():
    import pipeline.data.synthetic as synthetic
    from tests.data.test_photographs import roughness

    def values(variant: str) -> list[float]:
        return [roughness(synthetic._occluder_texture(variant, np.random.default_rng(seed), 32), np.ones((32, 32), bool))
                for seed in range(40)]

    plain = [value for value in values("box") if value < 1e-3]
    assert 5 <= len(plain) <= 35                        # both kinds occur
    assert min(values("patch")) > 0.1


def _fine_detail(grey: np.ndarray, region: np.ndarray) -> float:
    from pipeline.data.synthetic import gaussian_blur

    return float(np.abs(grey - gaussian_blur(grey, 1.0))[region].mean())


def test_gaussian_blur_keeps_the_mean_and_blurs_each_channel_alike():
    from pipeline.data.synthetic import gaussian_blur

    impulse = np.zeros((21, 21), np.float32)
    impulse[10, 10] = 300.0                         # no clipping to 255: the blur works in float
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum() == pytest.approx(300.0, rel=1e-5)
    assert blurred[10, 11] / blurred[10, 10] == pytest.approx(np.exp(-0.5), rel=1e-4)
    colour = np.random.default_rng(0).uniform(0, 255, (9, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(gaussian_blur(colour, 0.7)[..., 2], gaussian_blur(colour[..., 2], 0.7), rtol=1e-6)


def test_real_faces_are_as_sharp_as_a_photographs(monkeypatch):
    """The 25-px face tiles, stretched over the face, were softer than the photograph set's faces (fine
    detail 5.3-17.1 there, a median of about 5.6 in training faces); a segmenter then marked sharp real faces as
    occluders. Sharpened and given fine detail, training faces reach the photographs' range, and no face
    pixel is driven to black by it."""
    import pipeline.data.synthetic as synthetic
    from scipy import ndimage

    shipped_share = synthetic.SHARPENED_FACE_SHARE
    monkeypatch.setattr(synthetic, "PHOTO_FACE_SHARE", 1.0)
    monkeypatch.setattr(synthetic, "MONOCHROME_SHARE", 0.0)

    def face_detail(sharpened_share: float) -> tuple[np.ndarray, float]:
        monkeypatch.setattr(synthetic, "SHARPENED_FACE_SHARE", sharpened_share)
        details, black = [], []
        for index in range(30):
            sample = render_sample(11, index, 64, {"box": 1.0}, (0.01, 0.05))
            face = ndimage.binary_erosion(sample.label_map == FACE, iterations=2)
            details.append(_fine_detail(sample.clean_image.astype(np.float32).mean(axis=2), face))
            black.append((sample.clean_image[face].max(axis=1) <= 2).mean())
        return np.array(details), float(np.mean(black))

    (always, always_black), (never, never_black) = face_detail(1.0), face_detail(0.0)
    assert np.median(always) > 1.25 * np.median(never)          # the same faces, sharpened or not
    assert always_black <= never_black + 0.002
    shipped, _ = face_detail(shipped_share)
    assert np.median(shipped) > 7.0
    assert (shipped > 11.7).mean() >= 0.2                        # the astronaut's face


def test_a_share_of_occluder_textures_is_soft(monkeypatch):
    """Sharp detail alone must not mark an occluder: the same textures, blurred in BLURRED_OCCLUDER_SHARE of
    the draws (out of focus, or a smooth material)."""
    import pipeline.data.synthetic as synthetic

    shipped_share = synthetic.BLURRED_OCCLUDER_SHARE
    everywhere = np.ones((64, 64), bool)

    def details(share: float) -> np.ndarray:
        monkeypatch.setattr(synthetic, "BLURRED_OCCLUDER_SHARE", share)
        return np.array([_fine_detail(synthetic._occluder_texture("patch", np.random.default_rng(seed), 64).mean(axis=2),
                                      everywhere) for seed in range(60)])

    sharp, blurred = details(0.0), details(1.0)
    assert (blurred < sharp).all() and np.median(blurred / sharp) < 0.6
    softened = np.mean(details(shipped_share) < 0.8 * sharp)
    assert 0.15 <= softened <= 0.45
