import numpy as np

from pipeline.data.photographs import CARD_COLOURS, FACE_PHOTOS, OBJECTS, build_photograph_set, card_mask, face_crop_at
from pipeline.data.synthetic import OCCLUDER


def test_photograph_set_is_deterministic_and_small():
    first, second = build_photograph_set(48, seed=1), build_photograph_set(48, seed=1)
    assert 10 <= len(first) <= 60
    assert len(first) == len(FACE_PHOTOS) * len(OBJECTS)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.occluded_image, b.occluded_image)
        np.testing.assert_array_equal(a.occluder_mask, b.occluder_mask)


def test_pasted_object_masks_are_exact():
    for sample in build_photograph_set(64, seed=0):
        mask = sample.occluder_mask > 0
        assert set(np.unique(sample.occluder_mask)) <= {0, 255}
        assert sample.occluded_image.shape == sample.clean_image.shape == (64, 64, 3)
        # Outside the object the photograph is untouched; inside, the pasted pixels replace it.
        np.testing.assert_array_equal(sample.occluded_image[~mask], sample.clean_image[~mask])
        changed = (sample.occluded_image != sample.clean_image).any(axis=-1)
        assert changed[mask].mean() > 0.9, sample.occluder_type
        np.testing.assert_array_equal(sample.label_map == OCCLUDER, mask)
        assert 0.02 <= sample.mask_ratio <= 0.6


def roughness(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean |second difference| of brightness over the mask's interior, in grey levels: about 0 for
    one colour under linear shading, more for any texture."""
    grey = image.astype(np.float64).mean(axis=2)
    second = np.abs(grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    inside = mask[1:-1, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:] & mask[:-2, 1:-1] & mask[2:, 1:-1]
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
        # One axis-aligned rectangle, filled whole, in one colour (shaded by at most 5 % across).
        assert mask[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all(), sample.occluder_type
        pixels = sample.occluded_image[mask].astype(float)
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


# Where each photograph's mouth and right eye are, read off the photographs by eye (photograph pixels):
# the cameraman looks to the right, so his features sit right of the face's centre (FacePhoto.cx).
FEATURES = {"astronaut": {"mouth": (222, 145), "eye": (244, 103)},
            "grace_hopper": {"mouth": (265, 268), "eye": (315, 190)},
            "cameraman": {"mouth": (234, 179), "eye": (232, 144)}}


def test_cards_cover_the_mouth_and_the_eye_of_a_turned_face():
    resolution = 128
    for face in FACE_PHOTOS:
        side = face.half_width / 0.23
        left, top = face.cx - side / 2, face.cy - side / 2
        _, layout = face_crop_at(face, left, top, side, resolution)
        for place, (x, y) in FEATURES[face.name].items():
            mask = card_mask(layout, place, resolution)
            column, row = (round((x - left) * resolution / side), round((y - top) * resolution / side))
            # The feature and 3 px around it (about a tenth of the card's width) lie under the card.
            assert mask[row - 3:row + 4, column - 3:column + 4].all(), (face.name, place)
