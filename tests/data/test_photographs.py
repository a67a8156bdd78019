import numpy as np
import pytest

from pipeline.data.photographs import (CARD_COLOURS, FACE_PHOTOS, OBJECTS, PASTE_SCALE, _photo, build_photograph_set,
                                       card_mask, face_crop_at, fine_paste, photograph_sample, shrink)
from pipeline.data.synthetic import OCCLUDER


def test_photograph_set_is_deterministic_and_small():
    first, second = build_photograph_set(48, seed=1), build_photograph_set(48, seed=1)
    assert 10 <= len(first) <= 60
    assert len(first) == len(FACE_PHOTOS) * len(OBJECTS)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.occluded_image, b.occluded_image)
        np.testing.assert_array_equal(a.occluder_mask, b.occluder_mask)


def test_pasted_object_masks_are_exact():
    """The object is pasted on a crop PASTE_SCALE times finer and the picture averaged down: the mask marks
    exactly the pixels it covers at least half, and only pixels it covers at least in part differ from the photograph."""
    partly_covered_outside = []
    for face in FACE_PHOTOS:
        for number in range(len(OBJECTS)):
            sample = photograph_sample(face, number, 64, seed=0)
            _, fine_mask, _, occluder_type = fine_paste(face, number, 64 * PASTE_SCALE, seed=0)
            assert sample.occluder_type == occluder_type
            coverage = shrink(fine_mask, PASTE_SCALE)
            mask = sample.occluder_mask > 0
            assert set(np.unique(sample.occluder_mask)) <= {0, 255}
            assert sample.occluded_image.shape == sample.clean_image.shape == (64, 64, 3)
            np.testing.assert_array_equal(mask, coverage >= 0.5)
            np.testing.assert_array_equal(sample.label_map == OCCLUDER, mask)
            untouched = coverage == 0
            np.testing.assert_array_equal(sample.occluded_image[untouched], sample.clean_image[untouched])
            changed = (sample.occluded_image != sample.clean_image).any(axis=-1)
            assert changed[mask].mean() > 0.9, sample.occluder_type
            partly_covered_outside.append(changed[(coverage >= 0.2) & ~mask])
            assert 0.02 <= sample.mask_ratio <= 0.6
    # No pixel-exact seam: outside the mask, pixels the object covers in part show some of it.
    assert np.concatenate(partly_covered_outside).mean() > 0.9


def roughness(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean |second difference| of brightness over the mask's interior, in grey levels: about 0 for
    one colour under linear shading, more for any texture."""
    grey = image.astype(np.float64).mean(axis=2)
    second = np.abs(grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    whole = np.zeros_like(mask)     # the mask less its edge pixels, which the object covers only in part
    whole[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:] & mask[:-2, 1:-1] & mask[2:, 1:-1]
    inside = whole[1:-1, 1:-1] & whole[1:-1, :-2] & whole[1:-1, 2:] & whole[:-2, 1:-1] & whole[2:, 1:-1]
    return float(second[inside].mean())


def test_some_pasted_objects_are_one_plain_colour():
    samples = build_photograph_set(64, seed=0)
    fills = [sample.occluder_type.split("/")[1] for sample in samples]
    assert fills == [OBJECTS[index % len(OBJECTS)][1] for index in range(len(samples))]
    values = {fill: [roughness(sample.occluded_image, sample.occluder_mask > 0)
                     for sample, kind in zip(samples, fills) if kind == fill] for fill in set(fills)}
    assert len(values["plain"]) == 2 * len(FACE_PHOTOS)
    assert max(values["plain"]) < 1.0                   # one colour, only shaded (and rounded)
    assert min(values["photo"]) > 2 * max(values["plain"])   # photograph crops have texture


def test_flat_cards_cover_the_mouth_or_an_eye_in_every_colour():
    samples = [s for s in build_photograph_set(64, seed=0) if s.occluder_type.split("/")[1] == "card"]
    assert len(samples) == 2 * len(FACE_PHOTOS)
    colours = set()
    for sample in samples:
        face, _, variant = sample.occluder_type.split("/")
        place, colour = variant.split("-")
        colours.add(colour)
        mask = sample.occluder_mask > 0
        rows, columns = np.nonzero(mask)
        # One axis-aligned rectangle, filled whole, in one colour (shaded by at most 5 % across; its edge
        # pixels partly photograph).
        assert mask[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all(), sample.occluder_type
        interior = mask[1:-1, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:] & mask[:-2, 1:-1] & mask[2:, 1:-1]
        pixels = sample.occluded_image[1:-1, 1:-1][interior].astype(float)
        assert np.abs(pixels - np.array(CARD_COLOURS[colour])).max() <= 0.06 * 255, sample.occluder_type
        # Wider than high, over the face: the mouth's card below the eye's.
        assert columns.max() - columns.min() > rows.max() - rows.min()
        assert 16 <= columns.mean() <= 48 and place in ("mouth", "eye")
    assert colours == set(CARD_COLOURS)
    by_face = {}
    for sample in samples:
        face, _, variant = sample.occluder_type.split("/")
        by_face.setdefault(face, {})[variant.split("-")[0]] = np.nonzero(sample.occluder_mask)[0].mean()
    assert all(places["mouth"] > places["eye"] for places in by_face.values())


def test_feature_annotations_are_plausible():
    for face in FACE_PHOTOS:
        assert face.cy - face.half_height < face.eye_y < face.nose_y < face.mouth_y < face.cy + face.half_height
        assert all(abs(x - face.cx) < face.half_width for x in (face.mouth_x, face.eye_x)), face.name
    # The cameraman looks to the right: his mouth lies well right of his face's centre.
    cameraman = FACE_PHOTOS[-1]
    assert cameraman.mouth_x - cameraman.cx > 0.4 * cameraman.half_width


def test_cards_land_on_the_features_seen_in_any_crop():
    resolution = 128
    for face in FACE_PHOTOS:
        height, width = _photo(face.package, face.relative).shape[:2]
        for zoom, dx, dy in ((0.23, 0.0, 0.0), (0.2, -0.05, 0.04), (0.26, 0.06, -0.03)):
            side = min(face.half_width / zoom, width, height)
            left = float(np.clip(face.cx - side * (0.5 + dx), 0, width - side))
            top = float(np.clip(face.cy - side * (0.5 + dy), 0, height - side))
            pixel = side / resolution
            _, layout = face_crop_at(face, left, top, side, resolution)
            for place, (x, y) in (("mouth", (face.mouth_x, face.mouth_y)), ("eye", (face.eye_x, face.eye_y))):
                rows, columns = np.nonzero(card_mask(layout, place, resolution))
                centre_x, centre_y = (columns.mean() + 0.5) * pixel + left, (rows.mean() + 0.5) * pixel + top
                # Within a tenth of the card's half-size (and a pixel of the crop's rounding) of the feature.
                assert abs(centre_x - x) <= 0.1 * face.half_width * 0.5 + pixel, (face.name, place)
                assert abs(centre_y - y) <= 0.1 * face.half_height * 0.25 + pixel, (face.name, place)


def test_a_card_partly_outside_the_crop_is_cut_one_outside_refused():
    face = FACE_PHOTOS[0]
    _, layout = face_crop_at(face, face.mouth_x - 10, 0, 200, 64)   # the mouth 10 px inside the left edge
    mask = card_mask(layout, "mouth", 64)
    full_width = round(face.half_width * 64 / 200)   # half the face wide
    assert mask[:, 0].any() and 0 < mask.any(axis=0).sum() < full_width
    _, layout = face_crop_at(face, 300, 0, 200, 64)   # the crop right of the face
    with pytest.raises(ValueError, match="no pixels inside"):
        card_mask(layout, "mouth", 64)
    with pytest.raises(ValueError, match="mouth"):
        card_mask(layout, "nose", 64)
