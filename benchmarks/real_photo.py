"""A real photograph through `deocclude predict`, as a user runs it.

For each face photograph of the photograph set (`pipeline.data.photographs.FACE_PHOTOS`): a crop
of SIZE px around the face (face about 45 % of the width, whatever the model's resolution), one
flat-coloured rectangle pasted over the mouth (a card or a phone held up: the kind of object the
photograph set's plain objects stand for). Runs `deocclude predict --mask-out` on the directory
with the model at --model and prints, per image, the predicted mask's IoU with the rectangle and
PSNR over the whole image and inside the rectangle for ours, OpenCV Telea given our mask, and the
untouched input. Writes the inputs, outputs and a grid (input, our mask, output, clean) to OUT.

    .venv/bin/python benchmarks/real_photo.py --model models:/deocclusion/1 --out /tmp/real-photo
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.data.dataset import image_to_tensor
from pipeline.data.photographs import FACE_PHOTOS, _photo
from pipeline.evaluation.metrics import inpainting_metrics, iou
from pipeline.evaluation.telea import telea_inpaint

RECTANGLE_COLOURS = ((200, 30, 30), (30, 70, 180), (40, 40, 40))


def occluded_photograph(index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, occluded, mask) for face photograph `index` with a rectangle over its mouth."""
    face = FACE_PHOTOS[index]
    photo = _photo(face.package, face.relative)
    side = min(face.half_width * 2 / 0.45, *photo.shape[:2])
    left = float(np.clip(face.cx - side / 2, 0, photo.shape[1] - side))
    top = float(np.clip(face.cy - side / 2, 0, photo.shape[0] - side))
    clean = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side)))
    scale = size / side
    mouth_x, mouth_y = (face.cx - left) * scale, (face.mouth_y - top) * scale
    half_w, half_h = face.half_width * scale * 0.45, face.half_height * scale * 0.2
    mask = np.zeros((size, size), bool)
    mask[int(mouth_y - half_h):int(mouth_y + half_h), int(mouth_x - half_w):int(mouth_x + half_w)] = True
    occluded = clean.copy()
    occluded[mask] = RECTANGLE_COLOURS[index % len(RECTANGLE_COLOURS)]
    return clean, occluded, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/deocclusion@champion")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    inputs, outputs = args.out / "inputs", args.out / "outputs"
    inputs.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index, face in enumerate(FACE_PHOTOS):
        clean, occluded, mask = occluded_photograph(index, args.size)
        Image.fromarray(occluded).save(inputs / f"{face.name}.png")
        truth[face.name] = (clean, occluded, mask)
    deocclude = Path(sys.executable).parent / "deocclude"
    subprocess.run([str(deocclude), "--params", args.params, "predict", str(inputs), "-o", str(outputs), "--model", args.model],
                   check=True)
    rows = []
    print("image | IoU | whole PSNR ours / Telea / input | PSNR in rectangle ours / Telea / input")
    for name, (clean, occluded, mask) in truth.items():
        output = np.asarray(Image.open(outputs / f"{name}.png").convert("RGB"))
        predicted = np.asarray(Image.open(outputs / f"{name}_mask.png").convert("L")) > 127
        true_mask, predicted_mask = (torch.from_numpy(m)[None, None].float() for m in (mask, predicted))
        clean_t, occluded_t = image_to_tensor(clean)[None], image_to_tensor(occluded)[None]
        scores = {method: inpainting_metrics(image, clean_t, true_mask) for method, image in (
            ("ours", image_to_tensor(output)[None]), ("telea", telea_inpaint(occluded_t, predicted_mask)), ("input", occluded_t))}
        whole = " / ".join(f"{scores[method]['psnr'].item():.2f}" for method in scores)
        inside = " / ".join(f"{scores[method]['psnr_masked'].item():.2f}" for method in scores)
        print(f"{name} | {iou(predicted_mask, true_mask).item():.3f} | {whole} | {inside}")
        rows.append(np.concatenate([occluded, np.repeat(predicted[..., None] * 255, 3, axis=2).astype(np.uint8), output, clean],
                                   axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out / "grid.png")
    print(f"grid: {args.out / 'grid.png'}")


if __name__ == "__main__":
    main()
