"""Per-file checks made while ingesting: each problem a sentence naming the file and what is wrong.

Headers are read before any pixel is decoded, so an image that claims a huge size is refused
without allocating it. Nothing here writes anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
LABEL_VALUES = (0, 1, 2)  # background, face, occluder


class FileProblem(ValueError):
    """One file cannot be ingested; the message names it and says why."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray          # RGB (H, W, 3), RGBA (H, W, 4) or L (H, W), uint8
    exif_rotated: bool          # EXIF orientation was applied to the pixels


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted; names with spaces and non-ASCII letters are ordinary."""
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def inside_root(path: Path, root: Path) -> None:
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        raise FileProblem(f"{path}: a symlink leaving the data root {root} (to {path.resolve()}); copy the file in instead")


def _open_header(path: Path, max_pixels: int) -> Image.Image:
    if path.stat().st_size == 0:
        raise FileProblem(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise FileProblem(f"{path}: header claims a huge image ({error}); refused without decoding") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise FileProblem(f"{path}: not a readable image ({error})") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        image.close()
        raise FileProblem(f"{path}: header claims {image.width}x{image.height} = {pixels:,} pixels, over the limit of "
                          f"{max_pixels:,} (ingest.max_pixels); refused without decoding")
    return image


def _decode(path: Path, image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise FileProblem(f"{path}: cannot be decoded, truncated or corrupt ({error})") from None


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a malformed EXIF block says nothing about orientation
        return 1


def read_photo(path: Path, max_pixels: int, allow_exif_rotation: bool) -> Decoded:
    """A face photograph: 8-bit RGB (or a palette image), opaque; EXIF orientation applied when allowed."""
    with _open_header(path, max_pixels) as image:
        mode = image.mode
        if mode == "CMYK":
            raise FileProblem(f"{path}: CMYK colour; convert it to RGB first (print separations are not photographs of faces)")
        if mode in SIXTEEN_BIT_MODES:
            raise FileProblem(f"{path}: {mode} ({'16-bit' if mode.startswith('I;16') else '32-bit'} per channel); "
                              "save it as 8-bit RGB")
        if mode in ("L", "LA", "1"):
            raise FileProblem(f"{path}: grayscale ({mode}); faces must be colour RGB images")
        orientation = _exif_orientation(image)
        if orientation != 1 and not allow_exif_rotation:
            raise FileProblem(f"{path}: EXIF orientation {orientation} (stored rotated); its label map would not line up "
                              "with the pixels; save the image with the rotation applied")
        _decode(path, image)
        rotated = ImageOps.exif_transpose(image) if orientation != 1 else image
        if rotated.mode in ("RGBA", "PA") or (rotated.mode == "P" and "transparency" in rotated.info):
            rgba = np.asarray(rotated.convert("RGBA"))
            if (rgba[..., 3] < 255).any():
                raise FileProblem(f"{path}: RGBA with transparent pixels; a face image's alpha has no meaning here "
                                  "(occluder cut-outs go in the cut-out folder)")
        if rotated.mode not in ("RGB", "RGBA", "P", "PA", "YCbCr"):
            raise FileProblem(f"{path}: colour mode {rotated.mode} is not supported; save it as 8-bit RGB")
        return Decoded(np.asarray(rotated.convert("RGB")), orientation != 1)


def read_cutout(path: Path, max_pixels: int) -> Decoded:
    """An occluder cut-out: RGBA whose alpha is the occluder's exact shape."""
    with _open_header(path, max_pixels) as image:
        if image.mode != "RGBA":
            raise FileProblem(f"{path}: occluder cut-outs must be RGBA (their alpha is the mask), this is {image.mode}")
        _decode(path, image)
        rgba = np.asarray(image)
    alpha = rgba[..., 3]
    if (alpha == 255).all() or (alpha == 0).all():
        raise FileProblem(f"{path}: RGBA without occluder meaning: its alpha is {'fully opaque' if alpha.max() else 'fully transparent'}, "
                          "so it outlines no object")
    return Decoded(rgba, False)


def read_binary_mask(path: Path, max_pixels: int) -> Decoded:
    """A mask: one channel, only 0 and 255 (or 0 and 1); 255 marks the hidden pixels."""
    with _open_header(path, max_pixels) as image:
        if image.mode not in ("L", "1", "P"):
            raise FileProblem(f"{path}: a mask must be a one-channel image (L or 1), this is {image.mode}")
        _decode(path, image)
        values = np.asarray(image.convert("L") if image.mode != "L" else image)
    present = np.unique(values)
    if not (set(present.tolist()) <= {0, 255} or set(present.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in present[:8]) + (" ..." if len(present) > 8 else "")
        raise FileProblem(f"{path}: mask is not binary (values {shown}); expected only 0 and 255")
    return Decoded(np.where(values > 0, 255, 0).astype(np.uint8), False)


def read_label_map(path: Path, max_pixels: int) -> Decoded:
    """A label map: one channel, values background 0, face 1, occluder 2."""
    with _open_header(path, max_pixels) as image:
        if image.mode not in ("L", "P"):
            raise FileProblem(f"{path}: a label map must be one channel (L or P), this is {image.mode}")
        _decode(path, image)
        values = np.array(image, dtype=np.uint8)
    outside = sorted(set(np.unique(values).tolist()) - set(LABEL_VALUES))
    if outside:
        raise FileProblem(f"{path}: label value(s) {outside} out of range; allowed: 0 background, 1 face, 2 occluder")
    return Decoded(values, False)


def same_size(path: Path, decoded: Decoded, reference: Path, expected: tuple[int, int]) -> None:
    height, width = decoded.pixels.shape[:2]
    if (height, width) != expected:
        raise FileProblem(f"{path}: {width}x{height}, but its image {reference.name} is {expected[1]}x{expected[0]}; "
                          "a mask or label map must be aligned with its image pixel for pixel")


HASH_SIDE = 16  # a 16x16 difference hash: 256 bits, enough to tell aligned faces of different people apart


def perceptual_hash(pixels: np.ndarray) -> int:
    """256-bit difference hash of the (17 x 16) grayscale thumbnail: near-identical images (a
    re-encoded or resized copy) get hashes a few bits apart, different images about half apart."""
    gray = Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).convert("L")
    values = np.asarray(gray.resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR), dtype=np.int16)
    bits = (values[:, 1:] > values[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def near_duplicates(hashes: list[int], max_distance: int) -> list[tuple[int, int]]:
    """Index pairs whose hashes differ in at most `max_distance` bits. Cut into max_distance + 1
    bands, two such hashes agree exactly on at least one band, so only band-mates are compared."""
    bits = HASH_SIDE * HASH_SIDE
    bands = max_distance + 1
    edges = [round(bits * k / bands) for k in range(bands + 1)]
    pairs: set[tuple[int, int]] = set()
    for low, high in zip(edges[:-1], edges[1:]):
        buckets: dict[int, list[int]] = {}
        for index, value in enumerate(hashes):
            buckets.setdefault((value >> low) & ((1 << (high - low)) - 1), []).append(index)
        for members in buckets.values():
            for i, first in enumerate(members):
                for second in members[i + 1:]:
                    if (hashes[first] ^ hashes[second]).bit_count() <= max_distance:
                        pairs.add((first, second))
    return sorted(pairs)
