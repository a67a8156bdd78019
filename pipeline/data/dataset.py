"""The on-disk dataset: PNG files plus a manifest table, and tensors loaded from it."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.synthetic import SyntheticSample

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("id", "image_path", "clean_path", "mask_path", "label_path", "split",
                    "width", "height", "mask_ratio", "occluder_type", "sha256")
SPLITS = ("train", "val", "test")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sample(root: Path, sample_id: str, sample: SyntheticSample, split: str) -> dict[str, object]:
    """Write one sample's four PNGs under root and return its manifest row."""
    paths = {
        "image_path": f"images/{sample_id}.png",
        "clean_path": f"clean/{sample_id}.png",
        "mask_path": f"masks/{sample_id}.png",
        "label_path": f"labels/{sample_id}.png",
    }
    arrays = {
        "image_path": sample.occluded_image, "clean_path": sample.clean_image,
        "mask_path": sample.occluder_mask, "label_path": sample.label_map,
    }
    for key, relative in paths.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays[key]).save(target, optimize=False)
    height, width = sample.occluder_mask.shape
    return {"id": sample_id, **paths, "split": split, "width": width, "height": height,
            "mask_ratio": round(sample.mask_ratio, 6), "occluder_type": sample.occluder_type,
            "sha256": sha256_file(root / paths["image_path"])}


def write_manifest(root: Path, rows: list[dict[str, object]]) -> Path:
    path = root / MANIFEST
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_manifest(root: Path) -> list[dict[str, str]]:
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run the generate stage first)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = set(MANIFEST_COLUMNS) - set(rows[0].keys() if rows else MANIFEST_COLUMNS)
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)}")
    return rows


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (tensor.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True)
class SplitTensors:
    ids: list[str]
    occluded_image: torch.Tensor   # (N, 3, H, W) in [0, 1]
    clean_image: torch.Tensor      # (N, 3, H, W) in [0, 1]
    occluder_mask: torch.Tensor    # (N, 1, H, W) in {0, 1}
    label_map: torch.Tensor        # (N, H, W) uint8: 0 background, 1 face, 2 occluder
    mask_ratio: torch.Tensor       # (N,)
    occluder_type: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, start: int, stop: int) -> "SplitTensors":
        """Samples start..stop-1, sharing memory with this split."""
        part = slice(start, stop)
        return SplitTensors(self.ids[part], self.occluded_image[part], self.clean_image[part], self.occluder_mask[part],
                            self.label_map[part], self.mask_ratio[part], self.occluder_type[part])

    def chunks(self, size: int) -> "Iterator[SplitTensors]":
        for start in range(0, len(self), size):
            yield self.select(start, start + size)


@dataclass(frozen=True)
class SplitFiles:
    """One split as files on disk: ids and manifest facts in memory, pixels decoded only when a
    sample or a batch is asked for, so even the paper profile's 30,000 images cost a few MB here."""

    root: Path
    ids: list[str]
    files: list[tuple[str, str, str, str]]   # (image, clean, mask, label) paths relative to root
    mask_ratio: torch.Tensor                 # (N,)
    occluder_type: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, start: int, stop: int) -> SplitTensors:
        """Samples start..stop-1 decoded into tensors."""
        indices = range(*slice(start, stop).indices(len(self)))
        if not indices:
            raise IndexError(f"{self.root / MANIFEST}: no samples in {start}..{stop - 1} of a split of {len(self)}")
        decoded = [read_sample(self.root, self.files[index]) for index in indices]
        return SplitTensors(
            ids=[self.ids[index] for index in indices],
            occluded_image=torch.stack([sample[0] for sample in decoded]),
            clean_image=torch.stack([sample[1] for sample in decoded]),
            occluder_mask=torch.stack([sample[2] for sample in decoded]),
            label_map=torch.stack([sample[3] for sample in decoded]),
            mask_ratio=self.mask_ratio[start:stop],
            occluder_type=self.occluder_type[start:stop],
        )

    def chunks(self, size: int) -> Iterator[SplitTensors]:
        for start in range(0, len(self), size):
            yield self.select(start, start + size)


def read_sample(root: Path, files: tuple[str, str, str, str]) -> tuple[torch.Tensor, ...]:
    """One sample's (occluded (3, H, W), clean (3, H, W), mask (1, H, W) in {0, 1}, labels (H, W) uint8)."""
    image, clean, mask, label = (root / relative for relative in files)
    with Image.open(image) as occluded_png, Image.open(clean) as clean_png, Image.open(mask) as mask_png, \
            Image.open(label) as label_png:
        return (image_to_tensor(np.asarray(occluded_png.convert("RGB"))),
                image_to_tensor(np.asarray(clean_png.convert("RGB"))),
                torch.from_numpy(np.asarray(mask_png) > 127).float()[None],
                torch.from_numpy(np.array(label_png, dtype=np.uint8)))


def load_split(root: Path, split: str) -> SplitFiles:
    """One split of the dataset under root, read from its manifest; images are decoded lazily."""
    rows = [row for row in read_manifest(root) if row["split"] == split]
    if not rows:
        raise ValueError(f"{root / MANIFEST}: split '{split}' is empty")
    return SplitFiles(
        root=Path(root),
        ids=[r["id"] for r in rows],
        files=[(r["image_path"], r["clean_path"], r["mask_path"], r["label_path"]) for r in rows],
        mask_ratio=torch.tensor([float(r["mask_ratio"]) for r in rows]),
        occluder_type=[r["occluder_type"] for r in rows],
    )


@dataclass(frozen=True)
class DecodedPixels:
    """A split's pixels decoded once and held as they are stored (uint8 images and labels, a bool mask:
    8 bytes a pixel), so an epoch that draws a sample again decodes no PNG. Samples come back as the
    files give them, to the last bit."""

    occluded_image: torch.Tensor   # (N, 3, H, W) uint8
    clean_image: torch.Tensor      # (N, 3, H, W) uint8
    occluder_mask: torch.Tensor    # (N, 1, H, W) bool
    label_map: torch.Tensor        # (N, H, W) uint8

    BYTES_PER_PIXEL = 8

    @classmethod
    def decode(cls, split: SplitFiles, chunk: int = 256) -> "DecodedPixels":
        parts = [(to_uint8(part.occluded_image), to_uint8(part.clean_image), part.occluder_mask > 0.5, part.label_map)
                 for part in split.chunks(chunk)]
        return cls(*(torch.cat(tensors) for tensors in zip(*parts)))

    def sample(self, split: SplitFiles | SplitTensors, index: int) -> SplitTensors:
        part = slice(index, index + 1)
        return SplitTensors(split.ids[part], self.occluded_image[part].float() / 255.0,
                            self.clean_image[part].float() / 255.0, self.occluder_mask[part].float(),
                            self.label_map[part], split.mask_ratio[part], split.occluder_type[part])


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images decoded from 8-bit files (k / 255) back to their bytes, exactly."""
    return (images * 255).round().to(torch.uint8)


def decoded_bytes(split: SplitFiles) -> int:
    """What `DecodedPixels` of the split would hold, from the first image's header (one size per dataset)."""
    with Image.open(split.root / split.files[0][0]) as first:
        width, height = first.size
    return len(split) * width * height * DecodedPixels.BYTES_PER_PIXEL


class OcclusionDataset(Dataset):
    """(occluded image, clean image, occluder mask, label map) of one split, each sample resized to the
    model's resolution as it is drawn. A split on disk is decoded into memory once when its pixels fit in
    `cache_bytes`; a larger one is decoded sample by sample as drawn, so it is never held in memory."""

    def __init__(self, split: SplitFiles | SplitTensors, resolution: int | None = None, cache_bytes: int = 0) -> None:
        self.split = split
        self.resolution = resolution
        fits = isinstance(split, SplitFiles) and len(split) > 0 and decoded_bytes(split) <= cache_bytes
        self.pixels = DecodedPixels.decode(split) if fits else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = (self.pixels.sample(self.split, index) if self.pixels is not None
                  else self.split.select(index, index + 1))
        sample = resize_split(sample, self.resolution)
        return {
            "occluded_image": sample.occluded_image[0],
            "clean_image": sample.clean_image[0],
            "occluder_mask": sample.occluder_mask[0],
            "label_map": sample.label_map[0].long(),
        }


def resize_split(tensors: SplitTensors, resolution: int | None) -> SplitTensors:
    """The split at a model's training resolution: images bilinear, masks and labels nearest."""
    if resolution is None or tensors.occluded_image.shape[-1] == resolution:
        return tensors
    size = (resolution, resolution)

    def image(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)

    def nearest(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(batch.float(), size=size, mode="nearest")

    return replace(tensors, occluded_image=image(tensors.occluded_image), clean_image=image(tensors.clean_image),
                   occluder_mask=nearest(tensors.occluder_mask),
                   label_map=nearest(tensors.label_map[:, None])[:, 0].to(torch.uint8))
