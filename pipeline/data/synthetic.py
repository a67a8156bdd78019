"""Procedural faces with occluders, each with exact ground truth.

Every sample is a pure function of (seed, index), so a dataset is reproducible whatever its size
and any single sample can be re-rendered alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND, FACE, OCCLUDER = 0, 1, 2

SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66],
    [141, 85, 36], [110, 66, 36], [255, 205, 178], [92, 56, 34],
], dtype=np.float32)
HAIR_COLORS = np.array([
    [20, 16, 14], [60, 40, 25], [120, 80, 40], [200, 160, 90], [160, 60, 30], [130, 130, 130], [235, 225, 200],
], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticSample:
    occluded_image: np.ndarray  # (H, W, 3) uint8
    clean_image: np.ndarray     # (H, W, 3) uint8
    occluder_mask: np.ndarray   # (H, W) uint8, 0 or 255
    label_map: np.ndarray       # (H, W) uint8: 0 background, 1 face, 2 occluder
    occluder_type: str

    @property
    def mask_ratio(self) -> float:
        return float((self.occluder_mask > 0).mean())


@dataclass(frozen=True)
class FaceLayout:
    cx: float
    cy: float
    half_width: float
    half_height: float
    eye_y: float
    eye_dx: float
    mouth_y: float
    nose_y: float
    skin: np.ndarray


def _color(rgb: np.ndarray) -> tuple[int, int, int]:
    clipped = np.clip(rgb, 0, 255).astype(int)
    return int(clipped[0]), int(clipped[1]), int(clipped[2])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    top, bottom = rng.uniform(0, 255, size=(2, 3))
    t = np.linspace(0, 1, size, dtype=np.float32)
    if rng.random() < 0.5:
        gradient = t[:, None, None] * bottom + (1 - t[:, None, None]) * top
        image = np.broadcast_to(gradient, (size, size, 3)).copy()
    else:
        gradient = t[None, :, None] * bottom + (1 - t[None, :, None]) * top
        image = np.broadcast_to(gradient, (size, size, 3)).copy()
    canvas = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.25) * size
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_color(rng.uniform(0, 255, 3)))
    return np.asarray(canvas, dtype=np.float32)


def _draw_face(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, FaceLayout]:
    """Render a clean face; return the image, the face label mask and where the features are."""
    s = float(size)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.08, 3)
    hair = HAIR_COLORS[rng.integers(len(HAIR_COLORS))]
    layout = FaceLayout(
        cx=s * rng.uniform(0.44, 0.56), cy=s * rng.uniform(0.5, 0.6),
        half_width=s * rng.uniform(0.22, 0.3), half_height=s * rng.uniform(0.3, 0.38),
        eye_y=0.0, eye_dx=0.0, mouth_y=0.0, nose_y=0.0, skin=skin,
    )
    layout = FaceLayout(**{**layout.__dict__,
                           "eye_y": layout.cy - layout.half_height * rng.uniform(0.15, 0.3),
                           "eye_dx": layout.half_width * rng.uniform(0.38, 0.5),
                           "nose_y": layout.cy + layout.half_height * rng.uniform(0.1, 0.2),
                           "mouth_y": layout.cy + layout.half_height * rng.uniform(0.45, 0.6)})
    cx, cy, hw, hh = layout.cx, layout.cy, layout.half_width, layout.half_height

    canvas = Image.fromarray(_background(rng, size).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    hair_style = rng.integers(3)
    if hair_style > 0:  # long hair falls behind the face
        draw.ellipse([cx - hw * 1.3, cy - hh * 1.2, cx + hw * 1.3, cy + hh * (0.4 + 0.6 * (hair_style == 2))],
                     fill=_color(hair))
    draw.rectangle([cx - hw * 0.4, cy + hh * 0.6, cx + hw * 0.4, s], fill=_color(skin * 0.85))  # neck
    face_box = [cx - hw, cy - hh, cx + hw, cy + hh]
    label = Image.new("L", (size, size), 0)
    label_draw = ImageDraw.Draw(label)
    if rng.random() < 0.5:
        draw.ellipse(face_box, fill=_color(skin))
        label_draw.ellipse(face_box, fill=1)
    else:  # a squarer jaw
        radius = hw * rng.uniform(0.5, 0.9)
        draw.rounded_rectangle(face_box, radius=radius, fill=_color(skin))
        label_draw.rounded_rectangle(face_box, radius=radius, fill=1)
    draw.chord([cx - hw * 1.05, cy - hh * 1.1, cx + hw * 1.05, cy - hh * 0.2], 180, 360, fill=_color(hair))  # fringe
    label_draw.chord([cx - hw * 1.05, cy - hh * 1.1, cx + hw * 1.05, cy - hh * 0.2], 180, 360, fill=0)

    eye_r = hw * rng.uniform(0.12, 0.18)
    iris = _color(rng.uniform([20, 20, 10], [120, 140, 160]))
    for side in (-1, 1):
        ex = cx + side * layout.eye_dx
        draw.ellipse([ex - eye_r * 1.4, layout.eye_y - eye_r, ex + eye_r * 1.4, layout.eye_y + eye_r], fill=(245, 245, 240))
        draw.ellipse([ex - eye_r * 0.7, layout.eye_y - eye_r * 0.7, ex + eye_r * 0.7, layout.eye_y + eye_r * 0.7], fill=iris)
        brow_y = layout.eye_y - eye_r * rng.uniform(1.6, 2.4)
        draw.line([ex - eye_r * 1.6, brow_y + side * eye_r * rng.uniform(-0.3, 0.3), ex + eye_r * 1.6, brow_y],
                  fill=_color(hair * 0.8), width=max(1, int(s / 40)))
    nose_w = hw * rng.uniform(0.12, 0.22)
    draw.polygon([(cx, layout.eye_y + eye_r), (cx - nose_w, layout.nose_y), (cx + nose_w, layout.nose_y)],
                 fill=_color(skin * 0.8))
    mouth_w = hw * rng.uniform(0.3, 0.5)
    lips = _color(skin * np.array([0.9, 0.5, 0.5]) + np.array([40, 0, 0]))
    draw.chord([cx - mouth_w, layout.mouth_y - hh * 0.08, cx + mouth_w, layout.mouth_y + hh * 0.1],
               0 if rng.random() < 0.5 else 180, 360 if rng.random() < 0.5 else 180, fill=lips)

    image = np.asarray(canvas, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / s - 0.5
    lighting = 1.0 + rng.uniform(0.05, 0.25) * (np.cos(angle) * xx + np.sin(angle) * yy) * 2
    image = image * lighting[..., None] * rng.uniform(0.85, 1.1)
    image = image + rng.normal(0, 2.0, image.shape)
    return image.clip(0, 255).astype(np.uint8), np.asarray(label, dtype=bool), layout


def _occluder_shape(kind: str, rng: np.random.Generator, face: FaceLayout, size: int, scale: float,
                    draw: ImageDraw.ImageDraw) -> None:
    """Draw one occluder's silhouette (fill 255) on a mask; scale grows or shrinks it."""
    cx, cy, hw, hh = face.cx, face.cy, face.half_width * scale, face.half_height * scale
    if kind == "face_mask":
        top = face.nose_y - hh * rng.uniform(0.1, 0.3)
        draw.rounded_rectangle([cx - hw * 1.05, top, cx + hw * 1.05, face.cy + hh * 1.05], radius=hw * 0.4, fill=255)
        draw.line([cx - hw * 1.05, top + hh * 0.1, cx - hw * 1.4, top - hh * 0.2], fill=255, width=max(1, size // 64))
        draw.line([cx + hw * 1.05, top + hh * 0.1, cx + hw * 1.4, top - hh * 0.2], fill=255, width=max(1, size // 64))
    elif kind == "sunglasses":
        r = hw * rng.uniform(0.3, 0.42)
        for side in (-1, 1):
            ex = cx + side * face.eye_dx
            draw.ellipse([ex - r * 1.25, face.eye_y - r, ex + r * 1.25, face.eye_y + r * 0.9], fill=255)
        draw.line([cx - face.eye_dx, face.eye_y, cx + face.eye_dx, face.eye_y], fill=255, width=max(1, size // 48))
    elif kind == "hand":
        px = cx + rng.uniform(-0.6, 0.6) * hw
        py = cy + rng.uniform(-0.3, 0.7) * hh
        pw, ph = hw * 0.55, hh * 0.45
        draw.ellipse([px - pw, py - ph, px + pw, py + ph], fill=255)
        finger_w = pw * 0.38
        tilt = rng.uniform(-0.4, 0.4)
        for k in range(4):
            fx = px - pw * 0.75 + k * pw * 0.5
            length = ph * rng.uniform(1.3, 1.9)
            draw.line([fx, py, fx + tilt * length, py - length], fill=255, width=max(1, int(finger_w)))
        draw.line([px + pw * 0.8, py + ph * 0.2, px + pw * 1.6, py - ph * 0.4], fill=255, width=max(1, int(finger_w)))
    elif kind == "hat":
        brim_y = face.cy - face.half_height * rng.uniform(0.45, 0.75)
        draw.rectangle([cx - hw * 1.5, brim_y - hh * 0.12, cx + hw * 1.5, brim_y + hh * 0.08], fill=255)
        draw.rounded_rectangle([cx - hw * 0.95, brim_y - hh * 0.9, cx + hw * 0.95, brim_y], radius=hw * 0.3, fill=255)
    elif kind == "cup":
        bx = cx + rng.uniform(-0.4, 0.4) * hw
        by = face.mouth_y + rng.uniform(-0.2, 0.2) * hh
        if rng.random() < 0.5:  # a cup with a handle
            w, h = hw * 0.45, hh * 0.55
            draw.rectangle([bx - w, by - h * 0.4, bx + w, by + h], fill=255)
            draw.ellipse([bx + w * 0.7, by - h * 0.1, bx + w * 1.6, by + h * 0.6], fill=255)
        else:  # a microphone: head and handle
            r = hw * 0.32
            draw.ellipse([bx - r, by - r, bx + r, by + r], fill=255)
            draw.line([bx, by, bx + rng.uniform(-0.3, 0.3) * hw, size], fill=255, width=max(1, int(r * 0.7)))
    elif kind == "strokes":
        width = max(2, int(size * rng.uniform(0.04, 0.08) * scale))
        for _ in range(rng.integers(3, 7)):
            points = [tuple(rng.uniform([cx - hw * 1.3, cy - hh * 1.2], [cx + hw * 1.3, cy + hh * 1.2]))
                      for _ in range(rng.integers(2, 5))]
            draw.line(points, fill=255, width=width, joint="curve")
    elif kind == "box":
        w, h = hw * rng.uniform(0.4, 1.0), hh * rng.uniform(0.3, 0.8)
        bx, by = cx + rng.uniform(-0.5, 0.5) * hw, cy + rng.uniform(-0.6, 0.6) * hh
        draw.rectangle([bx - w, by - h, bx + w, by + h], fill=255)
    else:
        raise ValueError(f"unknown occluder type {kind!r}")


def _occluder_texture(kind: str, rng: np.random.Generator, size: int, face: FaceLayout) -> np.ndarray:
    if kind == "hand":
        base = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.05)
    elif kind == "face_mask":
        base = np.array([[190, 220, 240], [240, 240, 240], [30, 30, 35], [120, 160, 200]], dtype=np.float32)[rng.integers(4)]
    elif kind == "sunglasses":
        base = rng.uniform(0, 60, 3)
    else:
        base = rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 0.8 + 0.35 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + 0.5)
    texture = base[None, None, :] * shade[..., None]
    if kind in ("box", "strokes", "hat"):
        stripes = (np.sin(xx * rng.uniform(10, 40) + yy * rng.uniform(0, 30)) > 0)[..., None]
        texture = texture * np.where(stripes, 1.0, rng.uniform(0.6, 0.9))
    return texture + rng.normal(0, 3.0, texture.shape)


def render_sample(seed: int, index: int, size: int, occluder_weights: dict[str, float],
                  mask_ratio_range: tuple[float, float]) -> SyntheticSample:
    """Render sample `index` of the dataset seeded `seed`; its mask ratio lies inside mask_ratio_range."""
    rng = np.random.default_rng([seed, index])
    clean, face_region, layout = _draw_face(rng, size)
    kinds = [k for k, w in occluder_weights.items() if w > 0]
    probabilities = np.array([occluder_weights[k] for k in kinds], dtype=np.float64)
    kind = kinds[rng.choice(len(kinds), p=probabilities / probabilities.sum())]
    low, high = mask_ratio_range
    scale = rng.uniform(0.85, 1.15)
    mask_state = rng.bit_generator.state
    for _ in range(40):
        rng.bit_generator.state = mask_state  # same shape each try, only its scale changes
        silhouette = Image.new("L", (size, size), 0)
        _occluder_shape(kind, rng, layout, size, scale, ImageDraw.Draw(silhouette))
        mask = np.asarray(silhouette) > 0
        ratio = mask.mean()
        if low <= ratio <= high:
            break
        scale *= 1.15 if ratio < low else 0.87
    else:
        # Some shapes cannot reach the range at any scale (sunglasses at 60 %); a box can.
        kind = "box"
        target = rng.uniform(low, high)
        side_w = int(round(np.sqrt(target) * size))
        side_h = int(round(target * size * size / max(side_w, 1)))
        x0 = int(rng.integers(0, size - side_w + 1))
        y0 = int(rng.integers(0, size - side_h + 1))
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y0 + side_h, x0:x0 + side_w] = True
    texture = _occluder_texture(kind, rng, size, layout).clip(0, 255).astype(np.uint8)
    occluded = np.where(mask[..., None], texture, clean)
    label = np.where(mask, OCCLUDER, np.where(face_region, FACE, BACKGROUND)).astype(np.uint8)
    return SyntheticSample(
        occluded_image=occluded.astype(np.uint8),
        clean_image=clean,
        occluder_mask=(mask * 255).astype(np.uint8),
        label_map=label,
        occluder_type=kind,
    )


def assign_splits(count: int, fractions: dict[str, float], seed: int) -> list[str]:
    """Split names for `count` samples: shuffled deterministically, every split non-empty."""
    names = ["train", "val", "test"]
    sizes = [max(1, int(round(count * fractions[name]))) for name in names[1:]]
    sizes.insert(0, count - sum(sizes))
    if sizes[0] < 1:
        raise ValueError(f"{count} samples cannot fill train, val and test at {fractions}")
    labels = np.repeat(names, sizes)
    order = np.random.default_rng([seed, 7]).permutation(count)
    return [str(labels[position]) for position in np.argsort(order)]
