"""Users' datasets into the pipeline's manifest format, all or nothing.

Three kinds of source (`--kind`):
- faces: clean face photographs (CelebA-HQ / FFHQ layout: a folder of images, any size) with
  occluders composited on: the generator's occluder shapes, RGBA cut-outs from `--cutouts` (alpha
  gives the exact mask) and, with `--landmarks`, paper 002's landmark-placed face masks.
- labelled: `images/` + `labels/` (same file stems; label maps 0 background, 1 face, 2 occluder),
  RealOcc-style, used as they are. They carry no clean face: `clean_path` is the image itself, so
  they serve the segmenter (training and evaluation), not the inpainter's reconstruction metrics.
- masks: binary masks (irregular-mask layout: 255 = hidden) applied to the clean faces in
  `--faces`, binned by mask ratio.

A source may hold `train/`, `val/`, `test/` folders (its own split, kept) or not (split here,
near-duplicate images kept together). Every file is checked first; any problem fails the whole
ingest with every bad file named, and nothing is added. The raw source is only read.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.data.dataset import SPLITS, write_manifest
from pipeline.data.facts import record_facts, write_facts
from pipeline.data.synthetic import (
    BACKGROUND,
    FACE,
    OCCLUDER,
    FaceLayout,
    _box_mask,
    _fit_mask,
    _occluder_texture,
    assign_splits,
    stratified_mask_ratios,
)
from pipeline.errors import DeoccludeError
from pipeline.ingest.checks import (
    FileProblem,
    inside_root,
    list_images,
    near_duplicates,
    perceptual_hash,
    read_binary_mask,
    read_cutout,
    read_label_map,
    read_photo,
    same_size,
)
from pipeline.ingest.landmarks import MASK_COLOURS, mask_template, place_face_mask, read_landmarks

KINDS = ("faces", "labelled", "masks")
CUTOUTS, LANDMARKS, FACES, MASKS = "cutouts", "landmarks.csv", "faces", "masks"
SOURCES_FILE = "sources.csv"
INGEST_RECORD = "ingest.json"


class IngestError(DeoccludeError):
    """The source cannot be ingested; the message lists every problem, each naming its file."""


@dataclass(frozen=True)
class IngestSettings:
    resolution: int
    splits: dict[str, float]
    seed: int
    mask_ratio_range: tuple[float, float]
    occluders: dict[str, float]
    resize: str = "crop"            # crop: centre square, then resize; resize: squash to a square
    max_pixels: int = 40_000_000    # refused from the header above this
    duplicate_distance: int = 12    # perceptual-hash bits (of 256) within which two images are one
    landmark_mask_share: float = 0.5
    cutout_share: float = 0.5


@dataclass(frozen=True)
class SourceItem:
    path: Path                # the image (faces, labelled) or the mask (masks)
    split: str | None         # from the source's own split folders
    companion: Path | None = None   # labelled: its label map


@dataclass(frozen=True)
class IngestResult:
    name: str
    kind: str
    target: Path
    samples: int
    splits: dict[str, int]
    exif_rotated: int


def settings_from(cfg: Any) -> IngestSettings:
    """The ingest settings a Config gives (data.* and data.ingest.*)."""
    data = cfg.data
    return IngestSettings(resolution=data.resolution, splits=dict(data.splits), seed=cfg.seed,
                          mask_ratio_range=(data.mask_ratio_min, data.mask_ratio_max), occluders=dict(data.occluders),
                          **asdict(data.ingest))


def layout_options(source: Path, kind: str) -> dict[str, Path | None]:
    """A raw folder's conventional companions: faces/cutouts/ and faces/landmarks.csv; masks/faces/."""
    if kind == "faces":
        return {"cutouts_dir": source / CUTOUTS if (source / CUTOUTS).is_dir() else None,
                "landmarks_file": source / LANDMARKS if (source / LANDMARKS).is_file() else None}
    if kind == "masks":
        return {"faces_dir": source / FACES}
    return {}


def _split_folders(source: Path) -> dict[str, Path]:
    found = {split: source / split for split in SPLITS if (source / split).is_dir()}
    if found and set(found) != set(SPLITS):
        raise IngestError(f"{source}: has {', '.join(sorted(found))} folder(s) but not all of {', '.join(SPLITS)}; "
                          "give all three splits or none")
    return found


def _items(source: Path, kind: str) -> list[SourceItem]:
    roots = _split_folders(source) or {None: source}
    items: list[SourceItem] = []
    problems: list[str] = []
    for split, root in roots.items():
        if kind == "labelled":
            images_dir, labels_dir = root / "images", root / "labels"
            if not images_dir.is_dir() or not labels_dir.is_dir():
                raise IngestError(f"{root}: a labelled source holds images/ and labels/ folders")
            labels = {path.stem: path for path in list_images(labels_dir)}
            for image in list_images(images_dir):
                if image.stem not in labels:
                    problems.append(f"{image}: no label map {labels_dir / (image.stem + '.png')}")
                items.append(SourceItem(image, split, labels.get(image.stem)))
        elif kind == "masks":
            if not (root / MASKS).is_dir():
                raise IngestError(f"{root}: a masks source holds a masks/ folder (and faces/, the clean faces)")
            items += [SourceItem(path, split) for path in list_images(root / MASKS)]
        else:
            items += [SourceItem(path, split) for path in list_images(root)
                      if not path.is_relative_to(root / CUTOUTS)]
    if problems:
        raise IngestError(_problem_list(source, problems))
    if not items:
        raise IngestError(f"{source}: no images found (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif under it)")
    return items


def _problem_list(source: Path, problems: list[str]) -> str:
    shown = "\n".join(f"  - {problem}" for problem in problems)
    return f"{source}: {len(problems)} problem(s), nothing ingested:\n{shown}"


def _square(pixels: np.ndarray, resolution: int, mode: str, nearest: bool = False) -> np.ndarray:
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)
    box = None
    if mode == "crop" and height != width:
        side = min(height, width)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    return np.asarray(image.resize((resolution, resolution), Image.NEAREST if nearest else Image.BICUBIC, box=box))


def _landmark_transform(shape: tuple[int, int], resolution: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset taking source pixel coordinates to the stored square image's."""
    height, width = shape
    if mode == "crop" and height != width:
        side = min(height, width)
        offset = np.array([(width - side) // 2, (height - side) // 2], dtype=np.float64)
        return np.array([resolution / side] * 2), -offset * resolution / side
    return np.array([resolution / width, resolution / height]), np.zeros(2)


def default_layout(resolution: int) -> FaceLayout:
    """Where the face is in an aligned face crop (CelebA-HQ, FFHQ): centred, about 60 % of the width."""
    s = resolution
    return FaceLayout(cx=s * 0.5, cy=s * 0.52, half_width=s * 0.3, half_height=s * 0.38, eye_y=s * 0.42,
                      eye_dx=s * 0.12, mouth_y=s * 0.7, nose_y=s * 0.57, skin=np.zeros(3, np.float32))


def layout_from_landmarks(points: np.ndarray, resolution: int) -> FaceLayout:
    valid = points[~np.isnan(points).any(axis=1)]
    left, top = valid.min(axis=0)
    right, bottom = valid.max(axis=0)
    centre = (valid.min(axis=0) + valid.max(axis=0)) / 2
    eyes_y = float(points[36:48, 1].mean()) if not np.isnan(points[36:48]).any() else top + (bottom - top) * 0.3
    return FaceLayout(cx=float(centre[0]), cy=float(centre[1]), half_width=float(right - left) / 2 * 1.1,
                      half_height=float(bottom - top) / 2 * 1.25, eye_y=eyes_y, eye_dx=float(right - left) * 0.2,
                      mouth_y=float(points[8, 1] * 0.35 + points[33, 1] * 0.65), nose_y=float(points[33, 1]),
                      skin=np.zeros(3, np.float32))


def face_region(layout: FaceLayout, resolution: int) -> np.ndarray:
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
    return ((xx - layout.cx) / layout.half_width) ** 2 + ((yy - layout.cy) / layout.half_height) ** 2 <= 1.0


def _paste_cutout(rng: np.random.Generator, cutout: np.ndarray, layout: FaceLayout, resolution: int,
                  target: float) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out scaled so its opaque area is about `target` of the image, centred on the lower face."""
    opaque = float((cutout[..., 3] > 127).mean())
    scale = np.sqrt(target * resolution * resolution / max(opaque * cutout.shape[0] * cutout.shape[1], 1.0))
    width = max(2, min(resolution * 2, round(cutout.shape[1] * scale)))
    height = max(2, min(resolution * 2, round(cutout.shape[0] * scale)))
    resized = Image.fromarray(cutout).resize((width, height), Image.BILINEAR)
    angle = float(layout.roll + rng.normal(0, 12))
    resized = resized.rotate(angle, resample=Image.BILINEAR, expand=True)
    cx = layout.cx + rng.normal(0, 0.15) * layout.half_width
    cy = layout.mouth_y + rng.normal(0, 0.3) * layout.half_height
    canvas = Image.new("RGBA", (resolution, resolution), (0, 0, 0, 0))
    canvas.paste(resized, (round(cx - resized.width / 2), round(cy - resized.height / 2)), resized)
    rgba = np.asarray(canvas)
    return rgba[..., :3].astype(np.float32), rgba[..., 3] > 127


def composite_occluder(clean: np.ndarray, index: int, settings: IngestSettings, target: float,
                       stratum: tuple[float, float], layout: FaceLayout, points: np.ndarray | None,
                       cutouts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """One occluder on one clean face: (occluded image, mask, occluder type)."""
    rng = np.random.default_rng([settings.seed, index, 11])
    size = settings.resolution
    if points is not None and rng.random() < settings.landmark_mask_share:
        kind = list(MASK_COLOURS)[int(rng.integers(len(MASK_COLOURS)))]
        rgba = place_face_mask(mask_template(kind), points, (size, size))
        mask = rgba[..., 3] > 0
        if mask.any():
            occluded = np.where(mask[..., None], rgba[..., :3], clean)
            return occluded.astype(np.uint8), mask, f"landmark_{kind}_mask"
    if cutouts and rng.random() < settings.cutout_share:
        texture, mask = _paste_cutout(rng, cutouts[int(rng.integers(len(cutouts)))], layout, size, target)
        if mask.any():
            return np.where(mask[..., None], texture, clean).astype(np.uint8), mask, "cutout"
    kinds = [k for k, w in settings.occluders.items() if w > 0]
    weights = np.array([settings.occluders[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    fitted = _fit_mask(kind, np.random.default_rng([settings.seed, index, 12]), layout, size, target, stratum)
    mask, variant = fitted if fitted is not None else (_box_mask(rng, size, target), "box")
    texture = _occluder_texture(variant, rng, size)
    return np.where(mask[..., None], texture.clip(0, 255), clean).astype(np.uint8), mask, variant


def _splits_for(items: list[SourceItem], hashes: list[int], settings: IngestSettings, faces: bool) -> list[str]:
    """The source's own splits, refusing near-duplicate faces across them; or splits assigned here
    with near-duplicates kept in one split (no identity leaks from train into test). Masks carry
    no identity: a mask set is split without the check."""
    pairs = near_duplicates(hashes, settings.duplicate_distance) if faces else []
    if items[0].split is not None:
        leaks = [f"{items[a].path} ({items[a].split}) and {items[b].path} ({items[b].split}): the same image "
                 f"(perceptual hashes {(hashes[a] ^ hashes[b]).bit_count()} of 256 bits apart) in two splits, an identity leak"
                 for a, b in pairs if items[a].split != items[b].split]
        if leaks:
            raise IngestError(_problem_list(items[0].path.parent, leaks))
        return [str(item.split) for item in items]
    group = list(range(len(items)))   # union-find over near-duplicate pairs

    def find(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for a, b in pairs:
        group[find(a)] = find(b)
    roots = sorted({find(i) for i in range(len(items))})
    if len(roots) < 3:
        raise IngestError(f"{len(items)} distinct image(s) cannot fill train, val and test")
    root_split = dict(zip(roots, assign_splits(len(roots), settings.splits, settings.seed)))
    return [root_split[find(i)] for i in range(len(items))]


def _progress(iterable: Iterable, total: int, what: str, show: bool) -> Iterable:
    return tqdm(iterable, total=total, desc=what, unit="img", disable=not show, file=sys.stderr, leave=False)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=1)  # zlib level 1: encoding was half the ingest time


def ingest(source: Path, kind: str, name: str, datasets_root: Path, settings: IngestSettings,
           cutouts_dir: Path | None = None, landmarks_file: Path | None = None, faces_dir: Path | None = None,
           progress: bool = True) -> IngestResult:
    """Check every file of `source`, then write `datasets_root/name` (manifest, PNGs, sources.csv,
    ingest.json) in one rename; on any problem raise IngestError and leave nothing behind."""
    if kind not in KINDS:
        raise IngestError(f"--kind {kind}: unknown; one of {', '.join(KINDS)}")
    if not name or "/" in name or name.startswith("."):
        raise IngestError(f"--name {name!r}: a dataset name is one folder name, not starting with '.'")
    source = source.resolve() if not source.is_symlink() else source
    if not source.is_dir():
        raise IngestError(f"{source}: not a folder")
    target = datasets_root / name
    if target.exists():
        raise IngestError(f"{target}: a dataset of that name exists; choose another --name or remove it")
    if kind == "masks" and faces_dir is None:
        raise IngestError("--kind masks needs --faces DIR: the clean faces the masks are applied to")
    items = _items(source, kind)
    faces = _items(faces_dir, "faces") if kind == "masks" else []
    cutout_paths = list_images(cutouts_dir) if cutouts_dir else []
    if cutouts_dir and not cutout_paths:
        raise IngestError(f"{cutouts_dir}: no cut-outs found (RGBA .png files)")
    landmarks = read_landmarks(landmarks_file) if landmarks_file else {}

    datasets_root.mkdir(parents=True, exist_ok=True)
    staging = datasets_root / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = _write(source, kind, name, staging, settings, items, faces_dir, faces, cutout_paths, landmarks, progress)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestResult(**{**asdict(result), "target": target})


def _write(source: Path, kind: str, name: str, staging: Path, settings: IngestSettings, items: list[SourceItem],
           faces_dir: Path | None, faces: list[SourceItem], cutout_paths: list[Path], landmarks: dict[str, np.ndarray],
           progress: bool) -> IngestResult:
    size = settings.resolution
    problems: list[str] = []
    hashes: list[int] = []
    records: list[dict[str, object]] = []
    cutouts: list[np.ndarray] = []
    for path in cutout_paths:
        try:
            inside_root(path, path.parent)
            cutouts.append(read_cutout(path, settings.max_pixels).pixels)
        except FileProblem as problem:
            problems.append(str(problem))
    clean_faces: list[np.ndarray] = []
    for item in faces:  # masks kind: the faces the masks go on
        try:
            inside_root(item.path, faces_dir)
            clean_faces.append(_square(read_photo(item.path, settings.max_pixels, True).pixels, size, settings.resize))
        except FileProblem as problem:
            problems.append(str(problem))

    # Pass 1: every file checked, decoded, squared to the resolution and staged.
    for index, item in enumerate(_progress(items, len(items), f"checking {source.name}", progress)):
        sample_id = f"{index:06d}"
        try:
            inside_root(item.path, source)
            record: dict[str, object] = {"id": sample_id, "source_path": str(item.path.relative_to(source)),
                                         "exif_rotated": False, "landmarks": False}
            if kind == "labelled":
                inside_root(item.companion, source)
                photo = read_photo(item.path, settings.max_pixels, allow_exif_rotation=False)
                labels = read_label_map(item.companion, settings.max_pixels)
                same_size(item.companion, labels, item.path, photo.pixels.shape[:2])
                _save(staging / "images" / f"{sample_id}.png", _square(photo.pixels, size, settings.resize))
                _save(staging / "labels" / f"{sample_id}.png", _square(labels.pixels, size, settings.resize, nearest=True))
                hashes.append(perceptual_hash(photo.pixels))
            elif kind == "faces":
                photo = read_photo(item.path, settings.max_pixels, allow_exif_rotation=True)
                record["exif_rotated"] = photo.exif_rotated
                points = landmarks.get(item.path.name)
                if points is not None:
                    scale, offset = _landmark_transform(photo.pixels.shape[:2], size, settings.resize)
                    (staging / "landmarks").mkdir(parents=True, exist_ok=True)
                    np.save(staging / "landmarks" / f"{sample_id}.npy", points * scale + offset)
                    record["landmarks"] = True
                _save(staging / "clean" / f"{sample_id}.png", _square(photo.pixels, size, settings.resize))
                hashes.append(perceptual_hash(photo.pixels))
            else:
                mask = read_binary_mask(item.path, settings.max_pixels)
                _save(staging / "masks" / f"{sample_id}.png", _square(mask.pixels, size, "resize", nearest=True))
                hashes.append(perceptual_hash(mask.pixels))
            records.append(record)
        except FileProblem as problem:
            problems.append(str(problem))
            hashes.append(0)
        except OSError as error:
            problems.append(f"{item.path}: cannot be read ({error})")
            hashes.append(0)
    if problems:
        raise IngestError(_problem_list(source, problems))
    if kind == "masks" and not clean_faces:
        raise IngestError("--faces: no clean faces found")

    splits = _splits_for(items, hashes, settings, faces=kind != "masks")
    rows, facts = _samples(kind, staging, settings, records, splits, clean_faces, cutouts, progress)
    write_manifest(staging, rows)
    write_facts(staging, facts)
    with open(staging / SOURCES_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "source_path", "exif_rotated", "landmarks", "phash"])
        writer.writeheader()
        for record, split, value in zip(records, splits, hashes):
            writer.writerow({**record, "split": split, "phash": f"{value:064x}"})
    counts = {split: splits.count(split) for split in SPLITS}
    (staging / INGEST_RECORD).write_text(json.dumps({
        "name": name, "kind": kind, "source": str(source), "samples": len(rows), "splits": counts,
        "settings": asdict(settings), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2, default=list) + "\n")
    return IngestResult(name, kind, staging, len(rows), counts, sum(bool(r["exif_rotated"]) for r in records))


def _samples(kind: str, staging: Path, settings: IngestSettings, records: list[dict[str, object]], splits: list[str],
             clean_faces: list[np.ndarray], cutouts: list[np.ndarray], progress: bool
             ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Pass 2: each staged file becomes a manifest sample (image, clean, mask, labels), with the
    facts validation reads (pipeline.data.facts)."""
    from pipeline.data.dataset import sha256_file

    size = settings.resolution
    targets = stratified_mask_ratios(splits, *settings.mask_ratio_range, settings.seed)
    order = np.random.default_rng([settings.seed, 13]).permutation(max(len(clean_faces), 1))
    rows, facts = [], []
    for index, (record, split) in enumerate(_progress(list(zip(records, splits)), len(records), "writing", progress)):
        sample_id = str(record["id"])
        paths = {key: f"{folder}/{sample_id}.png" for key, folder in
                 (("image_path", "images"), ("clean_path", "clean"), ("mask_path", "masks"), ("label_path", "labels"))}
        if kind == "labelled":
            labels = np.asarray(Image.open(staging / paths["label_path"]))
            mask = labels == OCCLUDER
            paths["clean_path"] = paths["image_path"]   # no clean face in a labelled set
            occluded = clean = np.asarray(Image.open(staging / paths["image_path"]).convert("RGB"))
            occluder_type = "labelled"
        elif kind == "faces":
            clean = np.asarray(Image.open(staging / paths["clean_path"]).convert("RGB"))
            landmark_file = staging / "landmarks" / f"{sample_id}.npy"
            points = np.load(landmark_file) if landmark_file.is_file() else None
            layout = layout_from_landmarks(points, size) if points is not None else default_layout(size)
            low, high, target = targets[index]
            occluded, mask, occluder_type = composite_occluder(clean, index, settings, target, (low, high), layout,
                                                               points, cutouts)
            labels = np.where(mask, OCCLUDER, np.where(face_region(layout, size), FACE, BACKGROUND)).astype(np.uint8)
            _save(staging / paths["image_path"], occluded)
            _save(staging / paths["mask_path"], (mask * 255).astype(np.uint8))
            _save(staging / paths["label_path"], labels)
        else:
            mask = np.asarray(Image.open(staging / paths["mask_path"])) > 127
            clean = clean_faces[int(order[index % len(order)])]
            occluded = np.where(mask[..., None], 255, clean).astype(np.uint8)
            _save(staging / paths["clean_path"], clean)
            _save(staging / paths["image_path"], occluded)
            labels = np.where(mask, OCCLUDER, np.where(face_region(default_layout(size), size), FACE, BACKGROUND))
            _save(staging / paths["label_path"], labels.astype(np.uint8))
            occluder_type = "mask_set"
        if kind == "labelled":
            _save(staging / paths["mask_path"], (mask * 255).astype(np.uint8))
        rows.append({"id": sample_id, **paths, "split": split, "width": size, "height": size,
                     "mask_ratio": round(float(mask.mean()), 6), "occluder_type": occluder_type,
                     "sha256": sha256_file(staging / paths["image_path"])})
        facts.append(record_facts(staging, rows[-1], {"image_path": occluded, "clean_path": clean,
                                                      "mask_path": (mask * 255).astype(np.uint8),
                                                      "label_path": np.asarray(labels, dtype=np.uint8)}))
    return rows, facts
