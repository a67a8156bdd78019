"""A real photograph through `deocclude predict`, as a user runs it.

For each face photograph of the photograph set (`pipeline.data.photographs.FACE_PHOTOS`): a crop
of SIZE px around the face (face about 45 % of the width, whatever the model's resolution), one
flat-coloured rectangle pasted over the mouth (a card or a phone held up: the photograph set's
`card_mask`, centred where the feature was seen). Runs `deocclude predict --mask-out` on the
directory with the model at --model and prints, per image, the predicted mask's IoU with the rectangle and
PSNR over the whole image and inside the rectangle for ours, OpenCV Telea given our mask, and the
untouched input. Writes the inputs, outputs and a grid (input, our mask, output, clean) to OUT.

    .venv/bin/python benchmarks/real_photo.py --model models:/deocclusion/1 --out /tmp/real-photo

--sweep pastes rectangles of six colours (among them a face's own: lip red, skin-like yellow, white)
over the mouth and over an eye of each face (36 images) and prints the mean IoU per colour and place,
and how many outputs beat the input inside the rectangle: one flat card is one image, the sweep shows
whether the segmenter looks at the object or at its colour.
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
from pipeline.data.photographs import FACE_PHOTOS, _photo, card_mask, face_crop_at
from pipeline.evaluation.metrics import inpainting_metrics, iou
from pipeline.evaluation.telea import telea_inpaint

RECTANGLE_COLOURS = ((200, 30, 30), (30, 70, 180), (40, 40, 40))
SWEEP_COLOURS = {"red": (200, 30, 30), "blue": (30, 70, 180), "dark": (40, 40, 40), "green": (40, 170, 60),
                 "white": (235, 235, 235), "yellow": (230, 200, 40)}


def occluded_photograph(index: int, size: int, colour: tuple[int, int, int] | None = None,
                        place: str = "mouth") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, occluded, mask) for face photograph `index` with the photograph set's card over its
    mouth (or the eye on the image's right: `place="eye"`), in `colour` (default: one of
    RECTANGLE_COLOURS by index)."""
    face = FACE_PHOTOS[index]
    photo = _photo(face.package, face.relative)
    side = min(face.half_width * 2 / 0.45, *photo.shape[:2])
    left = float(np.clip(face.cx - side / 2, 0, photo.shape[1] - side))
    top = float(np.clip(face.cy - side / 2, 0, photo.shape[0] - side))
    clean, layout = face_crop_at(face, left, top, side, size)
    mask = card_mask(layout, place, size)
    occluded = clean.copy()
    occluded[mask] = RECTANGLE_COLOURS[index % len(RECTANGLE_COLOURS)] if colour is None else colour
    return clean, occluded, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/deocclusion@champion")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweep", action="store_true", help="six colours over the mouth and over an eye of each face")
    args = parser.parse_args()
    inputs, outputs = args.out / "inputs", args.out / "outputs"
    inputs.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index, face in enumerate(FACE_PHOTOS):
        if not args.sweep:
            clean, occluded, mask = occluded_photograph(index, args.size)
            Image.fromarray(occluded).save(inputs / f"{face.name}.png")
            truth[face.name] = (clean, occluded, mask)
            continue
        for place in ("mouth", "eye"):
            for colour_name, colour in SWEEP_COLOURS.items():
                name = f"{face.name}-{place}-{colour_name}"
                clean, occluded, mask = occluded_photograph(index, args.size, colour, place)
                Image.fromarray(occluded).save(inputs / f"{name}.png")
                truth[name] = (clean, occluded, mask)
    deocclude = Path(sys.executable).parent / "deocclude"
    subprocess.run([str(deocclude), "--params", args.params, "predict", str(inputs), "-o", str(outputs), "--model", args.model],
                   check=True)
    rows, results = [], {}
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
        overlap = iou(predicted_mask, true_mask).item()
        results[name] = (overlap, scores["ours"]["psnr_masked"].item() > scores["input"]["psnr_masked"].item())
        print(f"{name} | {overlap:.3f} | {whole} | {inside}")
        rows.append(np.concatenate([occluded, np.repeat(predicted[..., None] * 255, 3, axis=2).astype(np.uint8), output, clean],
                                   axis=1))
    if args.sweep:
        print("\nmean IoU with the rectangle | " + " | ".join(SWEEP_COLOURS))
        for place in ("mouth", "eye"):
            means = [np.mean([v[0] for k, v in results.items() if k.endswith(f"-{place}-{c}")]) for c in SWEEP_COLOURS]
            print(f"over the {place} | " + " | ".join(f"{m:.3f}" for m in means))
        beaten = sum(better for _, better in results.values())
        print(f"all {len(results)}: mean IoU {np.mean([v[0] for v in results.values()]):.3f}, IoU >= 0.5 in "
              f"{sum(v[0] >= 0.5 for v in results.values())}, output beats the input inside the rectangle in {beaten}")
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out / "grid.png")
    print(f"grid: {args.out / 'grid.png'}")


if __name__ == "__main__":
    main()
