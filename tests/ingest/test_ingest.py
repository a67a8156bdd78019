"""Ingesting users' datasets: every kind into the manifest format, every bad input refused with the
file named and nothing added, and the raw source never touched."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.synthetic import load_photo, package_file
from pipeline.ingest.ingest import IngestError, IngestSettings, ingest
from pipeline.ingest.landmarks import place_face_mask

SETTINGS = IngestSettings(resolution=32, splits={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3,
                          mask_ratio_range=(0.01, 0.6), occluders={"face_mask": 1, "hand": 1, "box": 1})


def photo_crops(count: int, size: tuple[int, int] = (60, 48)) -> list[np.ndarray]:
    photo = load_photo(package_file("skimage", "data/astronaut.png"))
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(count):
        y, x = rng.integers(0, photo.shape[0] - 300, 2)
        crops.append(np.asarray(Image.fromarray(photo[y:y + 300, x:x + 250]).resize(size[::-1])))
    return crops


def faces_folder(root: Path, count: int = 12) -> Path:
    root.mkdir(parents=True)
    for index, pixels in enumerate(photo_crops(count)):
        Image.fromarray(pixels).save(root / f"visage n°{index} été.png")
    return root


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def refuse(source: Path, kind: str, target: Path, *fragments: str, **options) -> str:
    before = tree_digest(source)
    with pytest.raises(IngestError) as refused:
        ingest(source, kind, "candidate", target, SETTINGS, progress=False, **options)
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message, message
    assert not (target / "candidate").exists()
    assert not list(target.glob(".candidate.partial*")) if target.exists() else True
    assert tree_digest(source) == before  # the raw source is only read
    return message


def test_faces_with_spaces_and_accents_become_a_stratified_manifest_that_validates(tmp_path):
    from pipeline.data.validation import validate_dataset

    source = faces_folder(tmp_path / "raw faces", 30)
    before = tree_digest(source)
    result = ingest(source, "faces", "mes visages", tmp_path / "data", SETTINGS, progress=False)
    target = tmp_path / "data" / "mes visages"
    assert result.samples == 30 and sum(result.splits.values()) == 30 and min(result.splits.values()) >= 1
    with open(target / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    ratios = [float(row["mask_ratio"]) for row in rows]
    assert min(ratios) < 0.15 and max(ratios) > 0.35   # the generator's strata, not one size
    with open(target / "sources.csv", newline="", encoding="utf-8") as handle:
        assert {row["source_path"] for row in csv.DictReader(handle)} == {p.name for p in source.iterdir()}
    outcome = validate_dataset(target, 32, (0.0, 0.61), 3)
    assert outcome.success, outcome
    occluded = np.asarray(Image.open(target / rows[0]["image_path"]))
    clean = np.asarray(Image.open(target / rows[0]["clean_path"]))
    mask = np.asarray(Image.open(target / rows[0]["mask_path"])) > 127
    assert (occluded[~mask] == clean[~mask]).all() and (occluded[mask] != clean[mask]).any()
    assert tree_digest(source) == before


def test_an_exif_rotated_face_is_turned_upright_and_recorded(tmp_path):
    source = faces_folder(tmp_path / "raw", 9)
    pixels = photo_crops(1, (40, 64))[0]               # stored 64 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6                                   # "rotate 90 CW to display"
    Image.fromarray(pixels).save(source / "rotated.jpg", exif=exif.tobytes(), quality=95)
    ingest(source, "faces", "set", tmp_path / "data", SETTINGS, progress=False)
    with open(tmp_path / "data" / "set" / "sources.csv", newline="", encoding="utf-8") as handle:
        rows = {row["source_path"]: row for row in csv.DictReader(handle)}
    assert rows["rotated.jpg"]["exif_rotated"] == "True"
    assert sum(row["exif_rotated"] == "True" for row in rows.values()) == 1


@pytest.mark.parametrize("case", ["truncated", "empty", "grayscale", "sixteen_bit", "cmyk", "transparent_rgba"])
def test_each_bad_face_image_is_refused_by_name_and_nothing_is_added(tmp_path, case):
    source = faces_folder(tmp_path / "raw", 6)
    good = photo_crops(1)[0]
    bad = source / f"bad {case}.png"
    expected = {"truncated": "cannot be decoded, truncated or corrupt", "empty": "empty file (0 bytes)",
                "grayscale": "grayscale (L)", "sixteen_bit": "16-bit", "cmyk": "CMYK colour",
                "transparent_rgba": "RGBA with transparent pixels"}[case]
    if case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(good).save(buffer, "JPEG", quality=95)
        bad = bad.with_suffix(".jpg")
        bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "grayscale":
        Image.fromarray(good).convert("L").save(bad)
    elif case == "sixteen_bit":
        Image.fromarray((good[..., 0].astype(np.uint16) * 257)).save(bad)
    elif case == "cmyk":
        bad = bad.with_suffix(".jpg")
        Image.fromarray(good).convert("CMYK").save(bad)
    else:
        rgba = np.dstack([good, np.full(good.shape[:2], 255, np.uint8)])
        rgba[:10, :10, 3] = 0
        Image.fromarray(rgba).save(bad)
    refuse(source, "faces", tmp_path / "data", str(bad), expected, "nothing ingested")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_an_image_whose_header_claims_a_huge_size_is_refused_without_decoding(tmp_path):
    import resource

    source = faces_folder(tmp_path / "raw", 6)
    (source / "bomb.png").write_bytes(png_claiming(100_000, 100_000))   # 30 GB if decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refuse(source, "faces", tmp_path / "data", "bomb.png", "refused without decoding")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing near 30 GB


def test_a_symlink_leaving_the_data_root_and_an_empty_folder_are_refused(tmp_path):
    source = faces_folder(tmp_path / "raw", 6)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(photo_crops(1)[0]).save(outside)
    (source / "link.png").symlink_to(outside)
    refuse(source, "faces", tmp_path / "data", "link.png", "a symlink leaving the data root")
    (tmp_path / "empty").mkdir()
    refuse(tmp_path / "empty", "faces", tmp_path / "data", "no images found")


def test_every_bad_file_is_named_in_one_refusal(tmp_path):
    source = faces_folder(tmp_path / "raw", 6)
    (source / "a empty.png").write_bytes(b"")
    Image.fromarray(photo_crops(1)[0]).convert("L").save(source / "b gray.png")
    message = refuse(source, "faces", tmp_path / "data", "a empty.png", "b gray.png", "2 problem(s)")
    assert message.count("\n  - ") == 2


def labelled_folder(root: Path, count: int = 9) -> Path:
    for index, pixels in enumerate(photo_crops(count, (48, 48))):
        split_root = root
        (split_root / "images").mkdir(parents=True, exist_ok=True)
        (split_root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(split_root / "images" / f"img {index}.png")
        labels = np.zeros((48, 48), np.uint8)
        labels[8:40, 10:38] = 1
        labels[24:40, 14:34] = 2
        Image.fromarray(labels).save(split_root / "labels" / f"img {index}.png")
    return root


def test_a_labelled_set_is_used_as_it_is(tmp_path):
    source = labelled_folder(tmp_path / "realocc")
    ingest(source, "labelled", "realocc", tmp_path / "data", SETTINGS, progress=False)
    target = tmp_path / "data" / "realocc"
    with open(target / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["clean_path"] == row["image_path"] and row["occluder_type"] == "labelled" for row in rows)
    labels = np.asarray(Image.open(target / rows[0]["label_path"]))
    mask = np.asarray(Image.open(target / rows[0]["mask_path"])) > 127
    assert set(np.unique(labels)) == {0, 1, 2} and (mask == (labels == 2)).all()
    assert abs(float(rows[0]["mask_ratio"]) - mask.mean()) < 1e-5


@pytest.mark.parametrize("case", ["label_size", "label_value", "exif"])
def test_bad_labelled_files_are_refused(tmp_path, case):
    source = labelled_folder(tmp_path / "realocc")
    if case == "label_size":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(source / "labels" / "img 3.png")
        fragments = ("img 3.png", "32x32, but its image img 3.png is 48x48")
    elif case == "label_value":
        labels = np.zeros((48, 48), np.uint8)
        labels[0, 0] = 5
        Image.fromarray(labels).save(source / "labels" / "img 4.png")
        fragments = ("img 4.png", "label value(s) [5] out of range")
    else:
        exif = Image.Exif()
        exif[0x0112] = 8
        Image.fromarray(photo_crops(1, (48, 48))[0]).save(source / "images" / "img 5.png", exif=exif.tobytes())
        fragments = ("img 5.png", "EXIF orientation 8", "would not line up")
    refuse(source, "labelled", tmp_path / "data", *fragments)


def test_the_same_image_in_two_given_splits_is_an_identity_leak(tmp_path):
    source = tmp_path / "split"
    crops = photo_crops(6)
    for split, chosen in (("train", crops[:3]), ("val", crops[3:5]), ("test", crops[5:])):
        (source / split).mkdir(parents=True)
        for index, pixels in enumerate(chosen):
            Image.fromarray(pixels).save(source / split / f"{split}{index}.png")
    Image.fromarray(crops[0]).resize((47, 59)).save(source / "test" / "copy of train0.jpg", quality=85)
    refuse(source, "faces", tmp_path / "data", "train0.png (train)", "copy of train0.jpg (test)", "identity leak")


def test_near_duplicates_without_given_splits_stay_in_one_split(tmp_path):
    source = faces_folder(tmp_path / "raw", 12)
    first = np.asarray(Image.open(next(source.glob("visage n°0 *"))))
    for copy in range(4):
        Image.fromarray(first).save(source / f"copy {copy}.jpg", quality=80 + copy * 5)
    ingest(source, "faces", "set", tmp_path / "data", SETTINGS, progress=False)
    with open(tmp_path / "data" / "set" / "sources.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    copies = {row["split"] for row in rows if row["source_path"].startswith(("copy", "visage n°0 "))}
    assert len(copies) == 1


def test_a_mask_set_is_applied_to_clean_faces_and_binned_by_ratio(tmp_path):
    source = tmp_path / "irregular"
    (source / "masks").mkdir(parents=True)
    faces_folder(source / "faces", 5)
    for index, fraction in enumerate(np.linspace(0.05, 0.55, 12)):
        mask = np.zeros((64, 64), np.uint8)
        mask[: int(round(64 * fraction)), :] = 255
        Image.fromarray(mask).save(source / "masks" / f"{index:05d}.png")
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(source / "masks" / "grey.png")
    refuse(source, "masks", tmp_path / "data", "grey.png", "mask is not binary (values 128)", faces_dir=source / "faces")
    (source / "masks" / "grey.png").unlink()
    ingest(source, "masks", "irregular", tmp_path / "data", SETTINGS, faces_dir=source / "faces", progress=False)
    with open(tmp_path / "data" / "irregular" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ratios = sorted(float(row["mask_ratio"]) for row in rows)
    assert len(rows) == 12 and ratios[0] < 0.1 and ratios[-1] > 0.5
    occluded = np.asarray(Image.open(tmp_path / "data" / "irregular" / rows[-1]["image_path"]))
    mask = np.asarray(Image.open(tmp_path / "data" / "irregular" / rows[-1]["mask_path"])) > 127
    assert (occluded[mask] == 255).all()


def test_algorithm_1_sizes_and_turns_the_mask_from_the_landmarks():
    points = np.full((68, 2), np.nan)
    points[29], points[8], points[33] = (50, 40), (50, 90), (50, 55)
    points[1], points[16] = (20, 45), (85, 45)
    template = np.zeros((100, 100, 4), np.uint8)
    template[..., 3] = 255                             # a full rectangle: the placed mask is its box
    rgba = place_face_mask(template, points, (128, 128))
    ys, xs = np.nonzero(rgba[..., 3])
    assert abs((ys.max() - ys.min() + 1) - 1.2 * 50) <= 2                       # H = 1.2 |29 - 8|
    assert abs((50 - xs.min()) - 1.2 * math.dist((50, 40), (20, 45))) <= 2     # right half, W_R
    assert abs((xs.max() + 1 - 50) - 1.2 * math.dist((50, 40), (85, 45))) <= 2  # left half, W_L
    assert abs((ys.min() + ys.max()) / 2 - 65) <= 1                            # centred on mid(29, 8)
    points[8] = (70, 88)                               # the chin off to one side: the mask turns with the face
    tilted = place_face_mask(template, points, (128, 128))
    ys, xs = np.nonzero(tilted[..., 3])
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(np.stack([xs, ys])))
    major = eigenvectors[:, np.argmax(eigenvalues)]    # the mask is wider than tall: its width's direction
    turned = math.degrees(math.atan2(-major[1], major[0]))
    turned = (turned + 90) % 180 - 90
    expected = math.degrees(math.atan2(70 - 50, 88 - 55))   # tip-to-chin line against the vertical
    assert abs(turned - expected) < 4


def test_faces_with_landmarks_get_paper_002_face_masks(tmp_path):
    source = faces_folder(tmp_path / "raw", 9)
    with open(source / "landmarks.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *[f"{axis}{i}" for i in range(68) for axis in "xy"]])
        for path in sorted(source.glob("*.png")):
            points = np.zeros((68, 2))
            points[:, 0], points[:, 1] = 24, 20
            points[29], points[8], points[33], points[1], points[16] = (24, 28), (24, 55), (24, 34), (6, 30), (42, 30)
            writer.writerow([path.name, *points.flatten()])
    settings = IngestSettings(**{**SETTINGS.__dict__, "landmark_mask_share": 1.0})
    ingest(source, "faces", "masked", tmp_path / "data", settings, landmarks_file=source / "landmarks.csv", progress=False)
    with open(tmp_path / "data" / "masked" / "manifest.csv", newline="") as handle:
        types = {row["occluder_type"] for row in csv.DictReader(handle)}
    assert types <= {"landmark_surgical_mask", "landmark_kn95_mask", "landmark_cloth_mask"} and types
