"""Face masks placed from facial landmarks: paper 002's Algorithm 1.

Height 1.2 x |nose(29) - chin(8)|; right half 1.2 x |nose(29) - jaw(1)| wide, left half
1.2 x |nose(29) - jaw(16)| wide, each half of a mask template resized on its own and joined at
the nose; centred on the midpoint of nose(29) and chin(8); rotated about its centre by the angle
between the nose-tip(33)-to-chin(8) line and the vertical. Points are dlib's 68, 0-indexed.

CelebA's aligned images ship 5 points (eyes, nose tip, mouth corners), not 68: the five points
stand in for the four Algorithm 1 needs (documented estimates, see `from_five_points`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.ingest.checks import FileProblem

NOSE_BRIDGE, NOSE_TIP, CHIN, JAW_RIGHT, JAW_LEFT = 29, 33, 8, 1, 16
MASK_COLOURS = {"surgical": (150, 190, 220), "kn95": (235, 235, 230), "cloth": (40, 42, 48)}  # paper 002's three kinds


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    """file name -> (68, 2) points. CSV with a header: `file` then x0,y0..x67,y67, or CelebA's five
    points (lefteye_x, lefteye_y, righteye_x, righteye_y, nose_x, nose_y, leftmouth_x, leftmouth_y,
    rightmouth_x, rightmouth_y), whitespace or comma separated."""
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].strip().isdigit():  # CelebA's files start with the image count
        lines = lines[1:]
    delimiter = "," if "," in lines[0] else None
    rows = [next(csv.reader([line])) if delimiter else line.split() for line in lines]
    header, body = rows[0], rows[1:]
    if header and header[0].lower() not in ("file", "image", "image_id", "filename"):
        header = ["file", *header]   # CelebA: the header has no column for the file name
    points: dict[str, np.ndarray] = {}
    for number, row in enumerate(body, start=2):
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise FileProblem(f"{path}: line {number}: coordinates are not numbers") from None
        if len(values) == 68:
            points[row[0]] = values
        elif len(values) == 5:
            points[row[0]] = from_five_points(values)
        else:
            raise FileProblem(f"{path}: line {number}: {len(values)} points; expected 68 (dlib) or 5 (CelebA)")
    return points


def from_five_points(five: np.ndarray) -> np.ndarray:
    """The 68-point positions Algorithm 1 reads, estimated from eyes, nose tip and mouth corners:
    the chin one eye-to-mouth distance below the mouth, the jaw at nose height one eye distance
    out from the eyes' midpoint, the nose bridge midway between the eyes' midpoint and the tip."""
    left_eye, right_eye, nose, left_mouth, right_mouth = five
    eyes, mouth = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    down = mouth - eyes
    across = right_eye - left_eye
    estimated = np.full((68, 2), np.nan)
    estimated[NOSE_TIP] = nose
    estimated[NOSE_BRIDGE] = (eyes + nose) / 2 + (nose - eyes) * 0.25
    estimated[CHIN] = mouth + down * 0.85
    estimated[JAW_RIGHT] = eyes + down * 0.45 - across * 1.0
    estimated[JAW_LEFT] = eyes + down * 0.45 + across * 1.0
    return estimated


def mask_template(kind: str, width: int = 200, height: int = 140) -> np.ndarray:
    """An RGBA face-mask template (surgical, KN95 or cloth), pleats included, nose at its top centre."""
    colour = MASK_COLOURS[kind]
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    if kind == "kn95":
        outline = [(0.02, 0.3), (0.5, 0.0), (0.98, 0.3), (0.8, 0.9), (0.5, 1.0), (0.2, 0.9)]
    else:
        outline = [(0.0, 0.12), (0.5, 0.0), (1.0, 0.12), (0.95, 0.75), (0.5, 1.0), (0.05, 0.75)]
    draw.polygon([(x * (width - 1), y * (height - 1)) for x, y in outline], fill=(*colour, 255))
    if kind == "surgical":
        for fraction in (0.35, 0.55, 0.75):
            y = int(fraction * height)
            draw.line([(0.06 * width, y), (0.94 * width, y)], fill=tuple(int(c * 0.8) for c in colour) + (255,), width=2)
    rgba = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.6))).copy()
    rgba[..., 3] = np.where(np.asarray(canvas)[..., 3] > 0, 255, 0)  # the mask stays exact; only colour softens
    return rgba


def place_face_mask(template: np.ndarray, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Algorithm 1: the template resized half by half from the landmarks and placed on a canvas of
    `size` (height, width); returns RGBA of that size, alpha 0 outside the mask."""
    nose, tip, chin = points[NOSE_BRIDGE], points[NOSE_TIP], points[CHIN]
    mask_height = 1.2 * float(np.linalg.norm(nose - chin))
    width_right = 1.2 * float(np.linalg.norm(nose - points[JAW_RIGHT]))
    width_left = 1.2 * float(np.linalg.norm(nose - points[JAW_LEFT]))
    if min(mask_height, width_right, width_left) < 2:
        raise FileProblem(f"landmarks too close together for a face mask (height {mask_height:.1f}, "
                          f"widths {width_right:.1f} / {width_left:.1f} px)")
    halves = np.split(template, [template.shape[1] // 2], axis=1)
    height_px = max(1, round(mask_height))
    right = Image.fromarray(halves[0]).resize((max(1, round(width_right)), height_px), Image.BILINEAR)
    left = Image.fromarray(halves[1]).resize((max(1, round(width_left)), height_px), Image.BILINEAR)
    joined = Image.new("RGBA", (right.width + left.width, height_px), (0, 0, 0, 0))
    joined.paste(right, (0, 0))
    joined.paste(left, (right.width, 0))
    centre = (nose + chin) / 2
    canvas = Image.new("RGBA", (size[1], size[0]), (0, 0, 0, 0))
    canvas.paste(joined, (round(centre[0] - right.width), round(centre[1] - height_px / 2)), joined)
    # The tip-to-chin line's angle from the vertical, counter-clockwise as PIL rotates.
    angle = math.degrees(math.atan2(chin[0] - tip[0], chin[1] - tip[1]))
    if abs(angle) > 0.5:
        canvas = canvas.rotate(angle, resample=Image.NEAREST, center=(float(centre[0]), float(centre[1])))
    rgba = np.asarray(canvas).copy()
    rgba[..., 3] = np.where(rgba[..., 3] > 127, 255, 0)
    return rgba
