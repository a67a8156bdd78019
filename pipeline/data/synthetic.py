"""Procedural faces with occluders, each with exact ground truth.

Every sample is a pure function of (seed, index, size, occluder weights, mask-ratio target), so a
dataset is reproducible whatever its size and any single sample can be re-rendered alone.

Realism that carries over to photographs: backgrounds, clothes, skin detail and occluders are
textured with crops of real photographs that installed packages ship (never downloaded), lit and
shaded; half the faces are real faces (scikit-image's LFW crops) tinted to the skin tone, so that a
photographic texture alone does not mark an occluder; the head varies in position, scale, roll and
yaw; occluder edges are hard, soft or semi-transparent; the camera adds blur, sensor noise and JPEG
artefacts, and one in ten is black and white. The photographs that the
photograph test set is built from (`pipeline.data.photographs`) are never used here.

The ground truth stays exact: degradations run on the clean scene and on the composite alike, and
the occluded image takes the composite only inside the occluder mask, so outside it the occluded
and clean images are identical.
"""

from __future__ import annotations

import colorsys
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUND, FACE, OCCLUDER = 0, 1, 2

SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36], [110, 66, 36],
    [255, 205, 178], [92, 56, 34], [234, 192, 165], [175, 120, 90], [205, 160, 130], [60, 40, 30],
], dtype=np.float32)
HAIR_COLORS = np.array([
    [20, 16, 14], [60, 40, 25], [120, 80, 40], [200, 160, 90], [160, 60, 30], [130, 130, 130], [235, 225, 200],
    [40, 30, 25], [90, 60, 40], [180, 130, 70],
], dtype=np.float32)

# Training textures: photographs shipped inside installed wheels, read from disk, never fetched.
# The faces and objects of the photograph test set (astronaut, camera, grace_hopper, coffee,
# chelsea; see photographs.py) are held out.
TEXTURE_FILES: tuple[tuple[str, str], ...] = (
    ("skimage", "data/brick.png"), ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"),
    ("skimage", "data/rocket.jpg"), ("skimage", "data/motorcycle_left.png"), ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/coins.png"), ("skimage", "data/moon.png"), ("skimage", "data/page.png"),
    ("skimage", "data/color.png"), ("skimage", "data/ihc.png"), ("skimage", "data/retina.jpg"),
    ("skimage", "data/logo.png"), ("skimage", "data/text.png"), ("skimage", "data/clock_motion.png"),
    ("skimage", "data/cell.png"), ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
)
# Real faces: scikit-image's 100 LFW face crops (25x25 grey; the file's other 100 tiles are not faces),
# stretched over the drawn face and tinted with its skin tone, so that photographic texture is not
# by itself a sign of an occluder. Held-out test photographs (astronaut, camera, grace_hopper) are others.
FACE_PHOTO_FILE = ("skimage", "data/lfw_subset.npy")
FACE_PHOTO_COUNT = 100
PHOTO_FACE_SHARE = 0.5      # faces drawn from a real face; the others are drawn feature by feature
MONOCHROME_SHARE = 0.1      # black-and-white cameras (the photograph set's cameraman is one)
# A real face from scikit-image's 25-px tiles, stretched over the face, is softer than a photograph's face,
# so a segmenter learned that sharp detail on a face is an occluder and marked the sharp faces of real
# photographs (blurring the photograph set by 0.7 px raised its IoU from 0.49 to 0.59). So most tiles
# are sharpened and given fine detail, and some occluders are soft (BENCHMARKS.md).
SHARPENED_FACE_SHARE = 0.7
BLURRED_OCCLUDER_SHARE = 0.3
TEXTURE_SIDE = 192  # shorter side of a loaded texture: room for crops up to the standard profile's size


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package; an error names it when missing (nothing is downloaded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed; it ships {relative}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed '{package}' package")
    return path


def load_photo(path: Path, shorter_side: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, optionally resized so its shorter side is `shorter_side`."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if shorter_side:
            scale = shorter_side / min(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


@lru_cache(maxsize=1)
def face_photos() -> np.ndarray:
    """(100, 25, 25) float32 grey levels 0..255 of real faces."""
    tiles = np.load(package_file(*FACE_PHOTO_FILE))[:FACE_PHOTO_COUNT]
    return (tiles * 255).astype(np.float32)


@lru_cache(maxsize=1)
def photo_textures() -> tuple[np.ndarray, ...]:
    return tuple(load_photo(package_file(package, relative), TEXTURE_SIDE) for package, relative in TEXTURE_FILES)


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
    """Where a face and its features are, in pixels of the (unrotated) canvas."""

    cx: float
    cy: float
    half_width: float
    half_height: float
    eye_y: float
    eye_dx: float
    mouth_y: float
    nose_y: float
    skin: np.ndarray
    yaw: float = 0.0            # features shift by yaw * half_width (-1 .. 1: profile left .. right)
    roll: float = 0.0           # degrees, counter-clockwise, about (cx, cy)

    @property
    def feature_x(self) -> float:
        return self.cx + self.yaw * self.half_width * 0.45


def _color(rgb: np.ndarray) -> tuple[int, int, int]:
    clipped = np.clip(rgb, 0, 255).astype(int)
    return int(clipped[0]), int(clipped[1]), int(clipped[2])


def photo_crop(rng: np.random.Generator, size: int, textures: tuple[np.ndarray, ...] | None = None,
               zoom: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """A random square crop of a random photograph, flipped and resized to (size, size, 3) float32."""
    textures = textures or photo_textures()
    photo = textures[int(rng.integers(len(textures)))]
    height, width = photo.shape[:2]
    side = max(4, int(min(height, width) * rng.uniform(*zoom)))
    y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    array = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    if rng.random() < 0.5:
        array = np.rot90(array, int(rng.integers(1, 4)))
    return np.ascontiguousarray(array)


def _color_jitter(rng: np.random.Generator, image: np.ndarray, strength: float = 0.25) -> np.ndarray:
    grey = image.mean(axis=2, keepdims=True)
    saturation = rng.uniform(1 - strength * 2, 1 + strength)
    image = grey + (image - grey) * saturation
    return image * rng.uniform(1 - strength, 1 + strength, 3) + rng.uniform(-30, 30) * strength


def plain_color(rng: np.random.Generator) -> np.ndarray:
    """One object colour, (3,) float: any hue, saturation leaning high, from dark to bright."""
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0, 1) ** 0.5, rng.uniform(0.15, 1)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32) * 255


def _linear_shading(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy            # in about [-0.7, 0.7]
    return 1.0 + rng.uniform(low, high) * ramp * 2


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    if rng.random() < 0.75:
        image = _color_jitter(rng, photo_crop(rng, size))
        blur = rng.uniform(0, 2.0) * size / 64             # depth of field
        if blur > 0.3:
            image = np.asarray(Image.fromarray(image.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)),
                               dtype=np.float32)
        return image
    top, bottom = rng.uniform(0, 255, size=(2, 3))
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(t * bottom + (1 - t) * top, (size, size, 3))
    if rng.random() < 0.5:
        image = image.transpose(1, 0, 2)
    canvas = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.25) * size
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_color(rng.uniform(0, 255, 3)))
    return np.asarray(canvas, dtype=np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` (h, w) or (h, w, c), float, blurred by a Gaussian of `sigma` px over its first two axes (edges
    repeated), in float: no clipping or rounding, unlike PIL's."""
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    for axis in (0, 1):
        padding = [(0, 0)] * image.ndim
        padding[axis] = (radius, radius)
        padded = np.pad(image, padding, mode="edge")
        length = image.shape[axis]
        image = sum(weight * np.take(padded, np.arange(k, k + length), axis=axis) for k, weight in enumerate(kernel))
    return image.astype(np.float32)


def _high_pass(grey: np.ndarray, radius: float) -> np.ndarray:
    """The fine detail of a grey image (0-255): itself less its Gaussian blur."""
    return grey - np.asarray(Image.fromarray(grey.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)


def _skin_layer(rng: np.random.Generator, size: int, layout: FaceLayout) -> np.ndarray:
    """Skin colour lit as a sphere from a random direction, with fine photographic detail."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    nx = ((xx - layout.cx) / (layout.half_width * 1.2)).clip(-1, 1)
    ny = ((yy - layout.cy) / (layout.half_height * 1.2)).clip(-1, 1)
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0.05, 1))
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.3), 1.0])
    light = light / np.linalg.norm(light)
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    ambient = rng.uniform(0.45, 0.7)
    shading = ambient + (1 - ambient) * diffuse
    detail = _high_pass(photo_crop(rng, size, zoom=(0.1, 0.4)).mean(axis=2), 2)
    skin = layout.skin[None, None, :] * shading[..., None] * 1.1 + detail[..., None] * rng.uniform(0.05, 0.25)
    return skin


def _photo_face_layer(rng: np.random.Generator, size: int, layout: FaceLayout) -> np.ndarray:
    """A real face stretched over the face box, most often sharpened, with fine photographic detail, its
    grey levels tinted with the skin tone."""
    tile = face_photos()[int(rng.integers(FACE_PHOTO_COUNT))]
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    width = max(2, int(round(layout.half_width * 2.1)))
    height = max(2, int(round(layout.half_height * 2.1)))
    stretched = np.asarray(Image.fromarray(tile.astype(np.uint8)).resize((width, height), Image.BICUBIC), dtype=np.float32)
    sharpened = rng.random() < SHARPENED_FACE_SHARE
    radius, amount = rng.uniform(0.8, 2.0) * size / 64, rng.uniform(0.5, 2.5)
    if sharpened:   # unsharp mask of the tile alone: its edge inside a turned face gains no halo
        stretched = stretched + (stretched - gaussian_blur(stretched, radius)) * amount
    canvas = Image.new("L", (size, size), int(tile.mean()))
    canvas.paste(Image.fromarray(stretched.clip(0, 255).astype(np.uint8)),
                 (int(round(layout.feature_x - width / 2)), int(round(layout.cy - height / 2))))
    detail = _high_pass(photo_crop(rng, size, zoom=(0.05, 0.3)).mean(axis=2), 1.5) * rng.uniform(0.0, 0.3)
    grey = (np.asarray(canvas, dtype=np.float32) + detail).clip(0, 255)
    relative = grey / max(float(tile.mean()), 1.0)
    contrast = rng.uniform(0.7, 1.1)
    return layout.skin[None, None, :] * (1 + (relative[..., None] - 1) * contrast) * rng.uniform(0.9, 1.15)


def _draw_face(rng: np.random.Generator, size: int, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, FaceLayout]:
    """Render a clean head and shoulders over the background; return the image, the face label
    mask and where the features are."""
    s = float(size)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.1, 3)
    hair = HAIR_COLORS[rng.integers(len(HAIR_COLORS))] * rng.uniform(0.8, 1.2)
    scale = rng.uniform(0.75, 1.25)
    half_width, half_height = s * rng.uniform(0.2, 0.27) * scale, s * rng.uniform(0.27, 0.35) * scale
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.42, 0.62)
    yaw = float(rng.uniform(-0.6, 0.6))
    layout = FaceLayout(cx=cx, cy=cy, half_width=half_width * (1 - 0.25 * abs(yaw)), half_height=half_height,
                        eye_y=cy - half_height * rng.uniform(0.1, 0.3), eye_dx=half_width * rng.uniform(0.36, 0.48),
                        nose_y=cy + half_height * rng.uniform(0.1, 0.22), mouth_y=cy + half_height * rng.uniform(0.42, 0.58),
                        skin=skin, yaw=yaw, roll=float(rng.normal(0, 12)))
    hw, hh, fx = layout.half_width, layout.half_height, layout.feature_x

    # Layers drawn unrotated, then rolled together about the face centre.
    alpha = Image.new("L", (size, size), 0)
    cover = ImageDraw.Draw(alpha)

    clothes = _color_jitter(rng, photo_crop(rng, size), 0.4) if rng.random() < 0.6 else \
        np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3))
    shoulders = Image.new("L", (size, size), 0)
    ImageDraw.Draw(shoulders).ellipse([cx - hw * rng.uniform(2.0, 3.2), cy + hh * rng.uniform(1.0, 1.3),
                                       cx + hw * rng.uniform(2.0, 3.2), cy + hh * 3.5], fill=255)
    hair_style = int(rng.integers(5))   # 0 bald/short, 1 bob, 2 long, 3 bun, 4 curly
    if hair_style in (1, 2, 4):  # hair falls behind the face
        bottom = cy + hh * (0.3 if hair_style == 1 else rng.uniform(0.8, 1.6))
        cover.ellipse([cx - hw * 1.35, cy - hh * 1.2, cx + hw * 1.35, bottom], fill=255)
    if hair_style == 3:
        r = hw * 0.5
        cover.ellipse([cx - r, cy - hh * 1.25 - r, cx + r, cy - hh * 1.25 + r], fill=255)
    cover.rectangle([cx - hw * 0.42, cy + hh * 0.5, cx + hw * 0.42, s * 2], fill=255)
    face_box = [cx - hw, cy - hh, cx + hw, cy + hh]
    face_shape = Image.new("L", (size, size), 0)
    if rng.random() < 0.5:
        ImageDraw.Draw(face_shape).ellipse(face_box, fill=255)
    else:  # a squarer jaw
        ImageDraw.Draw(face_shape).rounded_rectangle(face_box, radius=hw * rng.uniform(0.5, 0.9), fill=255)
    hairline = [cx - hw * 1.08, cy - hh * 1.12, cx + hw * 1.08, cy - hh * rng.uniform(0.05, 0.45)]
    fringe = Image.new("L", (size, size), 0)
    if hair_style != 0 or rng.random() < 0.6:
        ImageDraw.Draw(fringe).chord(hairline, 180, 360, fill=255)

    face_px = np.asarray(face_shape) > 0
    hair_px = (np.asarray(alpha) > 0) & ~face_px | (np.asarray(fringe) > 0)
    if hair_style == 3:
        hair_px |= np.asarray(alpha) > 0
    neck_px = (np.asarray(alpha) > 0) & ~hair_px & ~face_px
    skin_rgb = _skin_layer(rng, size, layout)
    photo_face = rng.random() < PHOTO_FACE_SHARE
    face_rgb = _photo_face_layer(rng, size, layout) if photo_face else skin_rgb
    hair_rgb = hair[None, None, :] * (0.7 + 0.6 * photo_crop(rng, size, zoom=(0.1, 0.5)).mean(axis=2, keepdims=True) / 255)
    if hair_style == 4:
        hair_rgb = hair_rgb * (0.8 + 0.4 * (np.sin(np.mgrid[0:size, 0:size][1] * rng.uniform(1, 2)) > 0)[..., None])
    body_px = (np.asarray(shoulders) > 0) & ~hair_px & ~face_px & ~neck_px

    image = background.copy()
    image[body_px] = clothes[body_px]
    image[neck_px] = skin_rgb[neck_px] * 0.8
    image[hair_px & ~(np.asarray(fringe) > 0)] = hair_rgb[hair_px & ~(np.asarray(fringe) > 0)]
    image[face_px] = face_rgb[face_px]
    fringe_px = np.asarray(fringe) > 0
    image[fringe_px] = hair_rgb[fringe_px]
    face_label = face_px & ~fringe_px

    # Features, drawn over the face.
    canvas = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if not photo_face:   # a real face brings its own eyes, nose and mouth
        eye_r = hw * rng.uniform(0.1, 0.17)
        iris = _color(rng.uniform([20, 20, 10], [120, 140, 160]))
        for side in (-1, 1):
            foreshortening = 1 - 0.5 * max(0.0, side * -yaw)   # the far eye narrows as the head turns
            ex = fx + side * layout.eye_dx * (1 - 0.3 * abs(yaw))
            rx = eye_r * 1.4 * foreshortening
            draw.ellipse([ex - rx, layout.eye_y - eye_r * 0.8, ex + rx, layout.eye_y + eye_r * 0.8], fill=(235, 232, 225))
            draw.ellipse([ex - eye_r * 0.6 * foreshortening, layout.eye_y - eye_r * 0.6, ex + eye_r * 0.6 * foreshortening,
                          layout.eye_y + eye_r * 0.6], fill=iris)
            draw.ellipse([ex - eye_r * 0.25, layout.eye_y - eye_r * 0.25, ex + eye_r * 0.25, layout.eye_y + eye_r * 0.25], fill=(10, 10, 10))
            brow_y = layout.eye_y - eye_r * rng.uniform(1.5, 2.4)
            draw.line([ex - rx * 1.1, brow_y + side * eye_r * rng.uniform(-0.3, 0.3), ex + rx * 1.1, brow_y],
                      fill=_color(hair * 0.7), width=max(1, int(s / 48)))
        nose_w = hw * rng.uniform(0.1, 0.2)
        nose_x = fx + yaw * hw * 0.15
        draw.polygon([(nose_x, layout.eye_y + eye_r), (nose_x - nose_w, layout.nose_y), (nose_x + nose_w, layout.nose_y)],
                     fill=_color(skin * rng.uniform(0.7, 0.85)))
        mouth_w = hw * rng.uniform(0.28, 0.48) * (1 - 0.3 * abs(yaw))
        lips = _color(skin * np.array([0.85, 0.5, 0.5]) + np.array([40, 0, 0]) * rng.uniform(0, 1.5))
        draw.chord([fx - mouth_w, layout.mouth_y - hh * 0.07, fx + mouth_w, layout.mouth_y + hh * 0.09],
                   0 if rng.random() < 0.5 else 180, 360 if rng.random() < 0.5 else 180, fill=lips)
        if rng.random() < 0.2:  # a beard or moustache
            draw.chord([fx - hw * 0.7, layout.nose_y, fx + hw * 0.7, cy + hh * 1.05], 0, 180, fill=_color(hair))
            mouth_box = [fx - mouth_w, layout.mouth_y - hh * 0.07, fx + mouth_w, layout.mouth_y + hh * 0.09]
            draw.chord(mouth_box, 0, 360, fill=lips)

    # Roll: rotate the head (and body) about the face centre; the background stays.
    head = np.asarray(canvas, dtype=np.float32)
    drawn = face_px | hair_px | neck_px | body_px | fringe_px
    if abs(layout.roll) > 0.5:
        def rolled(array: np.ndarray, resample: int) -> np.ndarray:
            return np.asarray(Image.fromarray(array).rotate(layout.roll, resample=resample, center=(cx, cy)))
        head = rolled(head.clip(0, 255).astype(np.uint8), Image.BILINEAR).astype(np.float32)
        coverage = rolled((drawn * 255).astype(np.uint8), Image.BILINEAR).astype(np.float32) / 255
        face_label = rolled((face_label * 255).astype(np.uint8), Image.NEAREST) > 127
        image = background * (1 - coverage[..., None]) + head * coverage[..., None]
    else:
        image = np.where(drawn[..., None], head, background)

    image = image * _linear_shading(rng, size, 0.05, 0.3)[..., None] * rng.uniform(0.8, 1.15)
    image = image * rng.uniform(0.9, 1.1, 3)   # white balance
    return image, face_label, layout


def _rotate_points(points: np.ndarray, center: tuple[float, float], degrees: float) -> np.ndarray:
    angle = np.deg2rad(-degrees)   # PIL rotates counter-clockwise in image coordinates (y down)
    c, s = np.cos(angle), np.sin(angle)
    shifted = points - np.asarray(center)
    return shifted @ np.array([[c, s], [-s, c]]) + np.asarray(center)


def _occluder_shape(kind: str, rng: np.random.Generator, face: FaceLayout, size: int, scale: float,
                    draw: ImageDraw.ImageDraw) -> str:
    """Draw one occluder's silhouette (fill 255) on a mask; scale grows or shrinks it. Returns the
    variant drawn (e.g. a `cup` may be a phone or a microphone)."""
    cx, cy, hw, hh = face.feature_x, face.cy, face.half_width * scale, face.half_height * scale
    line = max(1, size // 64)
    if kind == "face_mask":
        top = face.nose_y - hh * rng.uniform(0.1, 0.35)
        bottom = max(face.cy + hh * 1.05, top + 1)   # a small scale may lift the chin above the nose
        draw.rounded_rectangle([cx - hw * 1.05, top, cx + hw * 1.05, bottom], radius=hw * rng.uniform(0.3, 0.6), fill=255)
        draw.line([cx - hw * 1.05, top + hh * 0.1, cx - hw * 1.4, top - hh * 0.2], fill=255, width=line)
        draw.line([cx + hw * 1.05, top + hh * 0.1, cx + hw * 1.4, top - hh * 0.2], fill=255, width=line)
        return kind
    if kind == "sunglasses":
        r = hw * rng.uniform(0.3, 0.42)
        round_frames = rng.random() < 0.5
        for side in (-1, 1):
            ex = cx + side * face.eye_dx * scale ** 0.5
            box = [ex - r * 1.25, face.eye_y - r, ex + r * 1.25, face.eye_y + r * 0.9]
            if round_frames:
                draw.ellipse(box, fill=255)
            else:
                draw.rounded_rectangle(box, radius=r * 0.3, fill=255)
        draw.line([cx - face.eye_dx, face.eye_y, cx + face.eye_dx, face.eye_y], fill=255, width=max(1, size // 48))
        for side in (-1, 1):  # temples
            draw.line([cx + side * (face.eye_dx + r * 1.2), face.eye_y, cx + side * hw * 1.1, face.eye_y - r * 0.2],
                      fill=255, width=line)
        return kind
    if kind == "hand":
        px = cx + rng.uniform(-0.7, 0.7) * hw
        py = cy + rng.uniform(-0.4, 0.8) * hh
        pw, ph = hw * rng.uniform(0.45, 0.6), hh * rng.uniform(0.38, 0.5)
        draw.ellipse([px - pw, py - ph, px + pw, py + ph], fill=255)
        finger_w = pw * rng.uniform(0.3, 0.42)
        tilt = rng.uniform(-0.6, 0.6)
        fingers = int(rng.integers(2, 5))
        for k in range(fingers):
            fx = px - pw * 0.75 + k * pw * 1.5 / max(fingers - 1, 1)
            length = ph * rng.uniform(1.2, 2.0)
            draw.line([fx, py, fx + tilt * length, py - length], fill=255, width=max(1, int(finger_w)))
            tip = finger_w / 2
            draw.ellipse([fx + tilt * length - tip, py - length - tip, fx + tilt * length + tip, py - length + tip], fill=255)
        draw.line([px + pw * 0.8, py + ph * 0.2, px + pw * 1.6, py - ph * 0.4], fill=255, width=max(1, int(finger_w)))
        draw.line([px, py, px + rng.uniform(-0.5, 0.5) * hw, size * 1.2], fill=255, width=max(1, int(pw * 1.3)))  # wrist
        return kind
    if kind == "hat":
        brim_y = face.cy - face.half_height * rng.uniform(0.45, 0.75)
        draw.rectangle([cx - hw * 1.5, brim_y - hh * 0.12, cx + hw * 1.5, brim_y + hh * 0.08], fill=255)
        draw.rounded_rectangle([cx - hw * 0.95, brim_y - hh * 0.9, cx + hw * 0.95, brim_y], radius=hw * 0.3, fill=255)
        return kind
    if kind == "cup":
        bx = cx + rng.uniform(-0.5, 0.5) * hw
        by = face.mouth_y + rng.uniform(-0.3, 0.2) * hh
        variant = ("cup", "microphone", "phone")[int(rng.integers(3))]
        if variant == "cup":
            w, h = hw * 0.45, hh * 0.55
            draw.polygon([(bx - w, by - h * 0.4), (bx + w, by - h * 0.4), (bx + w * 0.8, by + h), (bx - w * 0.8, by + h)], fill=255)
            draw.ellipse([bx + w * 0.6, by - h * 0.1, bx + w * 1.5, by + h * 0.6], fill=255)
        elif variant == "microphone":
            r = hw * 0.32
            draw.ellipse([bx - r, by - r, bx + r, by + r], fill=255)
            draw.line([bx, by, bx + rng.uniform(-0.3, 0.3) * hw, size * 1.2], fill=255, width=max(1, int(r * 0.7)))
        else:  # a phone held to the ear or in front of the face
            w, h = hw * 0.32, hh * 0.5
            angle = rng.uniform(-40, 40)
            corners = np.array([[bx - w, by - h], [bx + w, by - h], [bx + w, by + h], [bx - w, by + h]])
            draw.polygon([tuple(p) for p in _rotate_points(corners, (bx, by), angle)], fill=255)
        return variant
    if kind == "strokes":
        if rng.random() < 0.5:  # locks of hair across the face
            width = max(1, int(size * rng.uniform(0.02, 0.05) * scale))
            x0 = cx + rng.uniform(-1, 1) * hw
            for _ in range(int(rng.integers(4, 12))):
                start = (x0 + rng.normal(0, hw * 0.2), cy - hh * 1.2)
                bend = (x0 + rng.normal(0, hw * 0.5), cy + rng.uniform(-0.3, 0.3) * hh)
                end = (x0 + rng.normal(0, hw * 0.8), cy + hh * rng.uniform(0.3, 1.2) * scale)
                draw.line([start, bend, end], fill=255, width=width, joint="curve")
            return "hair"
        width = max(2, int(size * rng.uniform(0.04, 0.08) * scale))
        for _ in range(rng.integers(3, 7)):
            points = [tuple(rng.uniform([cx - hw * 1.3, cy - hh * 1.2], [cx + hw * 1.3, cy + hh * 1.2]))
                      for _ in range(rng.integers(2, 5))]
            draw.line(points, fill=255, width=width, joint="curve")
        return kind
    if kind == "box":
        bx, by = cx + rng.uniform(-0.6, 0.6) * hw, cy + rng.uniform(-0.6, 0.6) * hh
        if rng.random() < 0.5:  # a textured patch of any outline
            n = int(rng.integers(5, 10))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(0.4, 1.0, n)
            points = np.stack([bx + np.cos(angles) * radii * hw * 0.9, by + np.sin(angles) * radii * hh * 0.7], axis=1)
            draw.polygon([tuple(p) for p in points], fill=255)
            return "patch"
        w, h = hw * rng.uniform(0.4, 1.0), hh * rng.uniform(0.3, 0.8)
        corners = np.array([[bx - w, by - h], [bx + w, by - h], [bx + w, by + h], [bx - w, by + h]])
        draw.polygon([tuple(p) for p in _rotate_points(corners, (bx, by), rng.uniform(-30, 30))], fill=255)
        return kind
    raise ValueError(f"unknown occluder type {kind!r}")


def _occluder_texture(variant: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """What the occluder looks like, (size, size, 3) float, before its edge is composited."""
    photographic = rng.random() < 0.6
    if variant == "hand":
        base = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.8, 1.1, 3)
        texture = base[None, None, :] * np.ones((size, size, 1), np.float32)
        texture = texture + (photo_crop(rng, size, zoom=(0.1, 0.3)).mean(axis=2, keepdims=True) - 128) * 0.1
    elif variant in ("face_mask", "hat") and not photographic:
        base = np.array([[190, 220, 240], [240, 240, 240], [30, 30, 35], [120, 160, 200], [80, 90, 70]], dtype=np.float32)[rng.integers(5)]
        texture = base[None, None, :] * np.ones((size, size, 1), np.float32)
        yy = np.mgrid[0:size, 0:size][0].astype(np.float32)
        texture = texture * (0.92 + 0.08 * np.sin(yy * rng.uniform(0.3, 0.9)))[..., None]   # pleats
    elif variant == "sunglasses":
        texture = rng.uniform(0, 60, 3)[None, None, :] * np.ones((size, size, 1), np.float32)
    elif variant == "hair":
        texture = HAIR_COLORS[rng.integers(len(HAIR_COLORS))][None, None, :] * \
            (0.6 + 0.8 * photo_crop(rng, size, zoom=(0.1, 0.4)).mean(axis=2, keepdims=True) / 255)
    elif photographic or variant == "patch":
        texture = _color_jitter(rng, photo_crop(rng, size, zoom=(0.15, 0.8)), 0.3)
    else:   # a painted or plastic object: one colour, often saturated (a red card, a blue cup)
        texture = plain_color(rng)[None, None, :] * np.ones((size, size, 1), np.float32)
        if variant == "strokes" and rng.random() < 0.5:
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
            stripes = (np.sin(xx * rng.uniform(10, 40) + yy * rng.uniform(0, 30)) > 0)[..., None]
            texture = texture * np.where(stripes, 1.0, rng.uniform(0.6, 0.9))
    blurred = rng.random() < BLURRED_OCCLUDER_SHARE
    sigma = rng.uniform(0.5, 1.5) * size / 64
    if blurred:   # out of focus, or a smooth material
        texture = gaussian_blur(texture, sigma)
    return texture * _linear_shading(rng, size, 0.1, 0.45)[..., None]


def _degrade(rng: np.random.Generator, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The camera: one blur, one noise field, one JPEG quality and colour or black-and-white, applied
    alike to several images."""
    blur = rng.uniform(0.3, 1.0) * size / 64 if rng.random() < 0.4 else 0.0
    noise = rng.normal(0, 1, (size, size, 3)).astype(np.float32) * rng.uniform(0, 6) + \
        rng.normal(0, 1, (size, size, 1)).astype(np.float32) * rng.uniform(0, 3)
    quality = int(rng.integers(35, 95)) if rng.random() < 0.5 else 0
    monochrome = rng.random() < MONOCHROME_SHARE

    def degrade(image: np.ndarray) -> np.ndarray:
        picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
        if blur:
            picture = picture.filter(ImageFilter.GaussianBlur(blur))
        array = (np.asarray(picture, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8)
        if quality:
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
            array = np.asarray(Image.open(buffer).convert("RGB"))
        if monochrome:   # after noise and JPEG, so that no colour is left
            array = np.asarray(Image.fromarray(array).convert("L").convert("RGB"))
        return array

    return degrade


def _silhouette(kind: str, rng_state: dict, layout: FaceLayout, size: int, scale: float, angle: float) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state   # the same shape each try, only its scale changes
    canvas = Image.new("L", (size, size), 0)
    variant = _occluder_shape(kind, rng, layout, size, scale, ImageDraw.Draw(canvas))
    if abs(angle) > 0.5:
        canvas = canvas.rotate(angle, resample=Image.NEAREST, center=(layout.cx, layout.cy))
    return np.asarray(canvas) > 0, variant


def _fit_mask(kind: str, rng: np.random.Generator, layout: FaceLayout, size: int, target: float,
              accept: tuple[float, float]) -> tuple[np.ndarray, str] | None:
    """The occluder's mask scaled so that its area ratio is near `target` and inside `accept`
    (bisection on the scale, in log space); None when no scale reaches it."""
    state = rng.bit_generator.state
    angle = layout.roll + rng.normal(0, 10)
    low, high = np.log(0.05), np.log(8.0)
    best: tuple[float, np.ndarray, str] | None = None
    for _ in range(18):
        middle = (low + high) / 2
        mask, variant = _silhouette(kind, state, layout, size, float(np.exp(middle)), angle)
        ratio = float(mask.mean())
        if accept[0] <= ratio < accept[1] and (best is None or abs(ratio - target) < best[0]):
            best = (abs(ratio - target), mask, variant)
            if best[0] < 0.01:
                break
        if ratio < target:
            low = middle
        else:
            high = middle
    return None if best is None else (best[1], best[2])


def _box_mask(rng: np.random.Generator, size: int, target: float) -> np.ndarray:
    """An axis-aligned box of area `target` (any ratio in (0, 1) is reachable)."""
    side_w = int(np.clip(round(np.sqrt(target) * size * rng.uniform(0.8, 1.25)), 1, size))
    side_h = int(np.clip(round(target * size * size / side_w), 1, size))
    x0 = int(rng.integers(0, size - side_w + 1))
    y0 = int(rng.integers(0, size - side_h + 1))
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y0 + side_h, x0:x0 + side_w] = True
    return mask


def render_sample(seed: int, index: int, size: int, occluder_weights: dict[str, float],
                  mask_ratio_range: tuple[float, float], target_ratio: float | None = None) -> SyntheticSample:
    """Render sample `index` of the dataset seeded `seed`; its mask ratio lies inside
    mask_ratio_range, as near `target_ratio` as the shape allows (default: uniform in the range)."""
    rng = np.random.default_rng([seed, index])
    low, high = mask_ratio_range
    target = float(rng.uniform(low, high)) if target_ratio is None else float(np.clip(target_ratio, low, high))
    background = _background(rng, size)
    clean_scene, face_region, layout = _draw_face(rng, size, background)
    kinds = [k for k, w in occluder_weights.items() if w > 0]
    probabilities = np.array([occluder_weights[k] for k in kinds], dtype=np.float64)
    kind = kinds[rng.choice(len(kinds), p=probabilities / probabilities.sum())]
    fitted = _fit_mask(kind, np.random.default_rng([seed, index, 1]), layout, size, target, (low, high))
    if fitted is None:  # Some shapes cannot reach the range at any scale (sunglasses at 60 %); a box can.
        mask, variant = _box_mask(rng, size, target), "box"
        if not low <= mask.mean() < high:
            mask = _box_mask(np.random.default_rng([seed, index, 2]), size, target)
    else:
        mask, variant = fitted
    texture = _occluder_texture(variant, rng, size)
    # Edges: hard, soft (a blurred alpha inside the mask) or see-through (tinted lenses).
    alpha = mask.astype(np.float32)
    edge = rng.random()
    if edge < 0.35:
        soft = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5) * size / 64)),
                          dtype=np.float32) / 255
        alpha = np.where(mask, np.maximum(soft, 0.35), 0.0)
    if variant == "sunglasses":
        alpha = alpha * rng.uniform(0.75, 0.95)
    composite = clean_scene * (1 - alpha[..., None]) + texture * alpha[..., None]
    degrade = _degrade(rng, size)
    clean = degrade(clean_scene)
    occluded = np.where(mask[..., None], degrade(composite), clean)
    label = np.where(mask, OCCLUDER, np.where(face_region, FACE, BACKGROUND)).astype(np.uint8)
    return SyntheticSample(
        occluded_image=occluded.astype(np.uint8),
        clean_image=clean,
        occluder_mask=(mask * 255).astype(np.uint8),
        label_map=label,
        occluder_type=variant,
    )


def _view_transform(rng: np.random.Generator, size: int, max_shift: int) -> Callable[[np.ndarray], np.ndarray]:
    """One photograph's framing and light: a shift of up to max_shift pixels (edges repeated) and a gain."""
    reach = max(1, max_shift)   # the padding; 0 pixels of shift still pads by one
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
    gain = float(rng.uniform(0.85, 1.15))

    def transform(image: np.ndarray) -> np.ndarray:
        padded = np.pad(image, ((reach, reach), (reach, reach)) + ((0, 0),) * (image.ndim - 2), mode="edge")
        return padded[reach - dy:reach - dy + size, reach - dx:reach - dx + size] * (gain if image.ndim == 3 else 1)

    return transform


def render_identity(seed: int, identity: int, view: int, size: int, occluder_weights: dict[str, float],
                    mask_ratio_range: tuple[float, float], occluded: bool = True,
                    max_shift: int | None = None) -> SyntheticSample:
    """Photograph `view` of synthetic person `identity`: the same face (shape, skin, hair, features,
    light) in every view; each view has its own background, framing (a shift of up to `max_shift`
    pixels, default size // 16), exposure and camera; with `occluded`, an occluder over it with a
    mask ratio near one drawn from `mask_ratio_range` (the shift may push a little of it out of frame).

    A view rendered with and without its occluder is the same photograph: identical clean image and
    identical pixels outside the mask, so views are the clean references of paper 001's test."""
    face_rng = np.random.default_rng([seed, identity, 10])
    view_rng = np.random.default_rng([seed, identity, view, 11])
    occluder_rng = np.random.default_rng([seed, identity, view, 12])
    clean_scene, face_region, layout = _draw_face(face_rng, size, _background(view_rng, size))
    shift = size // 16 if max_shift is None else max_shift
    frame, degrade = _view_transform(view_rng, size, shift), _degrade(view_rng, size)
    clean = degrade(frame(clean_scene))
    mask = np.zeros((size, size), dtype=bool)
    variant, occluded_image = "none", clean
    if occluded:
        low, high = mask_ratio_range
        target = float(occluder_rng.uniform(low, high))
        kinds = [k for k, w in occluder_weights.items() if w > 0]
        probabilities = np.array([occluder_weights[k] for k in kinds], dtype=np.float64)
        kind = kinds[occluder_rng.choice(len(kinds), p=probabilities / probabilities.sum())]
        fitted = _fit_mask(kind, occluder_rng, layout, size, target, (low, high))
        unframed, variant = fitted if fitted is not None else (_box_mask(occluder_rng, size, target), "box")
        alpha = unframed.astype(np.float32)
        composite = clean_scene * (1 - alpha[..., None]) + _occluder_texture(variant, occluder_rng, size) * alpha[..., None]
        mask = frame(unframed.astype(np.float32)) > 0.5
        occluded_image = np.where(mask[..., None], degrade(frame(composite)), clean)
    face = frame(face_region.astype(np.float32)) > 0.5
    label = np.where(mask, OCCLUDER, np.where(face, FACE, BACKGROUND)).astype(np.uint8)
    return SyntheticSample(occluded_image=occluded_image.astype(np.uint8), clean_image=clean,
                           occluder_mask=(mask * 255).astype(np.uint8), label_map=label, occluder_type=variant)


def ratio_strata(low: float, high: float, step: float = 0.1) -> list[tuple[float, float]]:
    """[low, high] cut at every multiple of `step`: paper 000's bins (1-10 %, 10-20 %, ...) for 0.01..0.6."""
    inner = [round(k * step, 10) for k in range(1, int(np.ceil(high / step))) if low < k * step < high]
    edges = [low, *inner, high]
    return list(zip(edges[:-1], edges[1:]))


def stratified_mask_ratios(splits: list[str], low: float, high: float, seed: int) -> list[tuple[float, float, float]]:
    """Per sample (stratum low, stratum high, target ratio): within each split the samples, in index
    order, cycle through the strata, so every stratum holds len(split) // strata samples or one more;
    the target is uniform inside the stratum, from (seed, index)."""
    strata = ratio_strata(low, high)
    seen: dict[str, int] = {}
    targets = []
    for index, split in enumerate(splits):
        rank = seen.get(split, 0)
        seen[split] = rank + 1
        stratum_low, stratum_high = strata[rank % len(strata)]
        margin = (stratum_high - stratum_low) * 0.1   # room for a box's rounding at 64 px
        target = float(np.random.default_rng([seed, index, 3]).uniform(stratum_low + margin, stratum_high - margin))
        targets.append((stratum_low, stratum_high, target))
    return targets


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
