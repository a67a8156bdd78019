"""Data loading at the paper profile's scale: peak memory while iterating one epoch of a
30,000-image 256-px dataset, and loader images/s against training images/s.

    .venv/bin/python benchmarks/dataloader.py --root /tmp/deocclude-bench --out benchmarks/results/dataloader-cpu.json

Rendering 30,000 faces at 256 px takes hours on two cores, so the dataset is `--pool` rendered
samples written with `write_sample`, the rest hard links to their files under their own ids (the
manifest and the loader see 30,000 distinct samples; each file is decoded for every id that links
to it, as it would be for distinct files, but the page cache holds fewer distinct bytes).
Training images/s: the quick profile's SOCLNET and IFACENET (its GAN step with the VGG19 losses)
at the same resolution, full Lightning steps on batches already in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: E402,F401  (torchvision shim before lightning)
import lightning as L  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from pipeline.config import OptimizerConfig  # noqa: E402
from pipeline.data.datamodule import OcclusionDataModule  # noqa: E402
from pipeline.data.dataset import MANIFEST, load_split, write_manifest, write_sample  # noqa: E402
from pipeline.data.synthetic import assign_splits, render_sample  # noqa: E402
from pipeline.losses.perceptual import VGG19Features  # noqa: E402
from pipeline.stages.training import quiet_lightning  # noqa: E402
from pipeline.models.registry import create_model  # noqa: E402
from pipeline.training.inpainter import InpainterModule  # noqa: E402
from pipeline.training.segmenter import SegmenterModule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILE_KEYS = ("image_path", "clean_path", "mask_path", "label_path")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_dataset(root: Path, count: int, pool: int, resolution: int, seed: int) -> None:
    if (root / MANIFEST).is_file():
        return
    params = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    splits = assign_splits(count, params["splits"], seed)
    rows = []
    started = time.perf_counter()
    for index in range(count):
        sample_id = f"{index:06d}"
        if index < pool:
            sample = render_sample(seed, index, resolution, params["occluders"], (0.01, 0.6))
            row = write_sample(root, sample_id, sample, splits[index])
        else:
            source = rows[index % pool]
            row = dict(source, id=sample_id, split=splits[index])
            for key in FILE_KEYS:
                row[key] = source[key].replace(source["id"], sample_id)
                os.link(root / source[key], root / row[key])
        rows.append(row)
    write_manifest(root, rows)
    print(f"dataset: {count} samples ({pool} rendered) in {time.perf_counter() - started:.0f} s", flush=True)


def loader_epoch(root: Path, resolution: int, batch_size: int, num_workers: int) -> dict[str, float]:
    train, val = load_split(root, "train"), load_split(root, "val")
    after_split = peak_rss_mb()
    data = OcclusionDataModule(train, val, resolution, batch_size, seed=0, num_workers=num_workers)
    images = 0
    started = time.perf_counter()
    for batch in data.train_dataloader():
        images += batch["occluded_image"].shape[0]
    seconds = time.perf_counter() - started
    return {"train_images": images, "seconds": round(seconds, 1), "images_per_s": round(images / seconds, 1),
            "peak_rss_after_load_split_mb": round(after_split, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def training_images_per_s(name: str, module: L.LightningModule, batches: list[dict[str, torch.Tensor]]) -> float:
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, torch.utils.data.DataLoader(batches[:1], batch_size=None))  # warm-up step
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    started = time.perf_counter()
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    seconds = time.perf_counter() - started
    rate = sum(b["occluded_image"].shape[0] for b in batches) / seconds
    print(f"{name}: {rate:.2f} training images/s", flush=True)
    return rate


def training_rates(root: Path, resolution: int, batch_size: int, steps: int) -> dict[str, float]:
    quick = yaml.safe_load((REPO / "params.yaml").read_text())
    batch = load_split(root, "val").select(0, batch_size)
    batches = [{"occluded_image": batch.occluded_image, "clean_image": batch.clean_image,
                "occluder_mask": batch.occluder_mask, "label_map": batch.label_map.long()}] * steps
    segmenter = quick["segmenter"]
    soclnet = SegmenterModule(create_model("soclnet", **segmenter["arch_kwargs"]), OptimizerConfig("adam", 1e-3),
                              segmenter["loss_weights"])
    inpainter = quick["inpainter"]
    ifacenet = InpainterModule(create_model("ifacenet", **inpainter["arch_kwargs"]), OptimizerConfig("adam", 1e-3),
                               inpainter["loss_weights"], create_model("patchgan", **inpainter["discriminator"]["arch_kwargs"]),
                               VGG19Features(inpainter["perceptual_layers"], weights="random"))
    return {"soclnet_quick": round(training_images_per_s("soclnet (quick)", soclnet, batches), 2),
            "ifacenet_quick_gan": round(training_images_per_s("ifacenet (quick, GAN + VGG19)", ifacenet, batches), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/deocclude-bench"))
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a loader worker's share; on a shared "
                        "2-core machine two spinning threads slow small ops many-fold)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    build_dataset(args.root, args.count, args.pool, args.resolution, seed=0)
    result = {"count": args.count, "rendered": args.pool, "resolution": args.resolution, "batch_size": args.batch_size,
              "num_workers": args.num_workers, "torch_threads": torch.get_num_threads()}
    result["loader"] = loader_epoch(args.root, args.resolution, args.batch_size, args.num_workers)
    print(f"loader: {result['loader']}", flush=True)
    with quiet_lightning():
        result["training_images_per_s"] = training_rates(args.root, args.resolution, args.batch_size, args.train_steps)
    slowest = min(result["training_images_per_s"].values())
    result["loader_over_fastest_training"] = round(result["loader"]["images_per_s"] / max(result["training_images_per_s"].values()), 1)
    result["loader_over_slowest_training"] = round(result["loader"]["images_per_s"] / slowest, 1)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
