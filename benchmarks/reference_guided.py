"""Reference-guided de-occlusion (paper 001, adapted) against plain inpainting, on synthetic people.

    .venv/bin/python benchmarks/reference_guided.py [--device cpu|cuda] [--size quick|tiny] [--train-seconds 240]
        [--identities 4] [--references 3] [--steps N] [--sweep] [--checkpoint PATH] [--out results.json]

The model: IFACENET at params.yaml's quick size (`--size quick`, inpainter.arch_kwargs) or a tiny
one (`--size tiny`, TINY_IFACENET), with a 16-wide PatchGAN, trained here from scratch for
--train-seconds on 64-px `render_sample` faces (seed 1000, ground-truth masks, L1 + 4 x hole L1 +
0.05 BCE adversarial, Adam 1e-3, batch 16). An existing --checkpoint is used as it is, so a model
trained once (on a GPU, say) is benchmarked on the CPU with the same weights.

The test (pipeline/evaluation/same_identity.py, which the evaluate stage runs too): `render_identity`
people (seed 2026), view 0 occluded (mask ratio 20-50 %, ground-truth masks), views 1..K clean as
references; twice: views shifted by up to 4 px (`shifted`, the
renderer's default) and all framed alike (`aligned`: background, exposure and camera still differ). Rows: plain inpainting (the encoder alone, paper 001's
`enc`); latent optimisation without the prior (sigma 1e3, no realism term: the paper's
`baseline`); reference-guided with params.yaml's `reference:` settings (the prior; paper 001's
`prior`), and with the realism term at the paper's 0.1 too (`prior_disc`). Scores
inside the occluder: PSNR, SSIM, and local LPIPS when its weights are cached (else the reason).
--sweep first scores a grid of lr x sigma on other people (seed 2025), as paper 001 tuned on a
validation set, and adds a test row with the best of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

import pipeline  # noqa: F401  (torchvision shim)
from pipeline.config import ReferenceConfig, load_config
from pipeline.data.synthetic import render_sample
from pipeline.evaluation.perceptual import Unavailable, load_lpips
from pipeline.evaluation.same_identity import (MASK_RATIOS, SameIdentityTest, build_same_identity_test, image_batch,
                                               method_settings, score_method)
from pipeline.losses.adversarial import ADVERSARIAL_LOSSES
from pipeline.losses.reconstruction import hole_valid_l1
from pipeline.models.checkpoint import NetworkSettings, file_md5, load_checkpoint, load_discriminator, save_checkpoint
from pipeline.models.registry import create_model
from pipeline.reference import perceptual_extractor

logger = logging.getLogger("benchmarks.reference_guided")
SIZE = 64
TRAIN_SEED, VALIDATION_SEED, TEST_SEED = 1000, 2025, 2026
TINY_IFACENET = {"tra_channels": 16, "shallow_channels": 16, "shallow_width": 8, "context_channels": 16,
                 "decoder_channels": 32, "resnet_layers": [1, 1, 1, 1], "resnet_width_per_group": 8}
SWEEP_LR = (0.01, 0.03, 0.1)
SWEEP_SIGMA = (0.25, 0.5, 1.0)


def train(arch_kwargs: dict, occluders: dict[str, float], seconds: float, samples: int, path: Path, device: str) -> None:
    torch.manual_seed(0)
    rendered = [render_sample(TRAIN_SEED, index, SIZE, occluders, (0.01, 0.6)) for index in range(samples)]
    occluded = image_batch([s.occluded_image for s in rendered]).to(device)
    clean = image_batch([s.clean_image for s in rendered]).to(device)
    masks = torch.stack([torch.from_numpy(s.occluder_mask > 0).float()[None] for s in rendered]).to(device)
    net = create_model("ifacenet", **arch_kwargs).to(device).train()
    discriminator = create_model("patchgan", width=16).to(device).train()
    d_loss, g_loss = ADVERSARIAL_LOSSES["bce"]
    net_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    start, steps = time.perf_counter(), 0
    generator = torch.Generator().manual_seed(0)
    while time.perf_counter() - start < seconds:
        index = torch.randperm(samples, generator=generator)[:16].to(device)
        prediction = net(occluded[index], masks[index])
        d_optimizer.zero_grad()
        d_loss(discriminator(clean[index]), discriminator(prediction.detach())).backward()
        d_optimizer.step()
        terms = hole_valid_l1(prediction, clean[index], masks[index])
        loss = (1.7 * (prediction - clean[index]).abs().mean() + 4.0 * terms["hole_l1"]
                + 0.05 * g_loss(discriminator(prediction)))
        net_optimizer.zero_grad()
        loss.backward()
        net_optimizer.step()
        steps += 1
    logger.info("trained %d steps in %.0f s on %s, last loss %.4f", steps, time.perf_counter() - start, device, loss.item())
    save_checkpoint(path, net, NetworkSettings("ifacenet", arch_kwargs, "inpainter", SIZE,
                                               discriminator_arch="patchgan", discriminator_kwargs={"width": 16}),
                    discriminator)


def run_variant(net: torch.nn.Module, discriminator: torch.nn.Module, test: SameIdentityTest,
                settings: ReferenceConfig | None, lpips) -> dict[str, float | str]:
    extractor = None if settings is None else perceptual_extractor(settings)
    return score_method(net, test, settings, lpips, discriminator=discriminator, extractor=extractor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=("quick", "tiny"), default="quick")
    parser.add_argument("--train-seconds", type=float, default=240)
    parser.add_argument("--train-samples", type=int, default=320)
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--references", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="default: params.yaml reference.steps")
    parser.add_argument("--sweep", action="store_true", help="tune lr x sigma on validation people first")
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/reference-bench-ifacenet.pt"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reference-guided-cpu.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config("params.yaml")
    occluders = dict(cfg.data.occluders)
    if not args.checkpoint.is_file():
        arch_kwargs = dict(cfg.inpainter.arch_kwargs) if args.size == "quick" else TINY_IFACENET
        train(arch_kwargs, occluders, args.train_seconds, args.train_samples, args.checkpoint, args.device)
    net, saved = load_checkpoint(args.checkpoint)
    net, discriminator = net.to(args.device), load_discriminator(args.checkpoint).to(args.device)
    lpips = load_lpips(cfg.evaluation.lpips_net)
    if isinstance(lpips, Unavailable):
        logger.info("local LPIPS not measured: %s", lpips.reason)

    guided = cfg.reference if args.steps is None else replace(cfg.reference, steps=args.steps)
    methods = method_settings(guided)
    variants: dict[str, ReferenceConfig | None] = {
        "plain inpainting (encoder only)": methods["plain"],
        "latent optimisation, no prior, no realism": methods["no_prior"],
        "reference-guided (params.yaml)": methods["prior"],
        "reference-guided + realism 0.1 (paper 001's prior_disc)": replace(guided, discriminator_weight=0.1),
    }
    sweep = []
    if args.sweep:
        validation = build_same_identity_test(VALIDATION_SEED, args.identities, args.references, SIZE, occluders)
        for lr, sigma in itertools.product(SWEEP_LR, SWEEP_SIGMA):
            row = {"lr": lr, "sigma": sigma, **run_variant(net, discriminator, validation, replace(guided, lr=lr, sigma=sigma), lpips)}
            logger.info("validation %s", row)
            sweep.append(row)
        best = max(sweep, key=lambda row: row["psnr_masked"])
        variants[f"reference-guided (validation's best: lr {best['lr']}, sigma {best['sigma']})"] = \
            replace(guided, lr=best["lr"], sigma=best["sigma"])

    rows = []
    for framing, max_shift in (("shifted", None), ("aligned", 0)):
        test = build_same_identity_test(TEST_SEED, args.identities, args.references, SIZE, occluders, max_shift)
        for name, settings in variants.items():
            row = {"framing": framing, "variant": name, **run_variant(net, discriminator, test, settings, lpips)}
            logger.info("test %s", row)
            rows.append(row)
    result = {"machine": {"platform": platform.platform(), "device": args.device, "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "model": {"checkpoint_md5": file_md5(args.checkpoint), "arch_kwargs": saved.arch_kwargs, "resolution": SIZE},
              "test": {"identities": args.identities, "references": args.references, "mask_ratios": MASK_RATIOS},
              "reference": asdict(guided), "sweep": sweep, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
