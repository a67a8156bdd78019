"""Paper 001's synthetic same-identity test: synthetic people the generator renders several times
(`render_identity`: one face, several photographs), view 0 occluded (20-50 % of the image, the
ground-truth mask known), views 1..K clean as that person's references. It scores plain inpainting
against latent optimisation without and with the references' prior, inside the occluder: PSNR, SSIM,
L1 and local LPIPS (when its weights are cached, else the reason).

The evaluate stage and benchmarks/reference_guided.py both build and score it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from torch import nn

from pipeline.config import ReferenceConfig
from pipeline.data.dataset import image_to_tensor
from pipeline.data.synthetic import render_identity
from pipeline.deocclusion import inpaint, network_device
from pipeline.evaluation.metrics import inpainting_metrics
from pipeline.evaluation.perceptual import LpipsScorer, Unavailable
from pipeline.evaluation.timing import timed
from pipeline.losses.perceptual import VGG19Features
from pipeline.reference import perceptual_extractor, reference_guided_inpaint

MASK_RATIOS = (0.2, 0.5)   # holes large enough that what is hidden matters
SCORES = ("psnr_masked", "ssim_masked", "l1_masked")
# Paper 001's rows: `enc` (the inpainter's own prediction), `baseline` (the latent optimised on the
# visible pixels alone) and `prior` (with the references' Gaussians).
METHODS = {
    "plain": "plain inpainting: the inpainter alone",
    "no_prior": "latent optimisation, no prior, no realism term",
    "prior": "reference-guided: params.yaml's reference: settings",
}
NO_PRIOR_SIGMA = 1e3   # Gaussians this wide weigh nothing: the prior is off, the optimisation alike


@dataclass(frozen=True)
class SameIdentityTest:
    occluded: torch.Tensor          # (N, 3, H, W): view 0 of each person, occluded
    clean: torch.Tensor             # (N, 3, H, W): the same photograph without its occluder
    masks: torch.Tensor             # (N, 1, H, W): the occluder's ground-truth mask
    references: list[torch.Tensor]  # per person (K, 3, H, W): views 1..K, clean

    def __len__(self) -> int:
        return len(self.occluded)


def image_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([image_to_tensor(image) for image in images])


def build_same_identity_test(seed: int, people: int, references: int, size: int, occluders: Mapping[str, float],
                             max_shift: int | None = None) -> SameIdentityTest:
    """`people` persons at `size` px; `max_shift` as `render_identity` (None: its default framing)."""
    render = partial(render_identity, seed, size=size, occluder_weights=dict(occluders),
                     mask_ratio_range=MASK_RATIOS, max_shift=max_shift)
    targets = [render(person, 0) for person in range(people)]
    return SameIdentityTest(
        occluded=image_batch([t.occluded_image for t in targets]),
        clean=image_batch([t.clean_image for t in targets]),
        masks=torch.stack([torch.from_numpy(t.occluder_mask > 0).float()[None] for t in targets]),
        references=[image_batch([render(person, view, occluded=False).clean_image for view in range(1, references + 1)])
                    for person in range(people)])


def method_settings(reference: ReferenceConfig, steps: int | None = None) -> dict[str, ReferenceConfig | None]:
    """Each method's optimisation settings (None: plain inpainting); `steps` overrides reference.steps."""
    guided = reference if steps is None else replace(reference, steps=steps)
    return {"plain": None, "no_prior": replace(guided, sigma=NO_PRIOR_SIGMA, discriminator_weight=0.0),
            "prior": guided}


def same_identity_outputs(inpainter: nn.Module, test: SameIdentityTest, settings: ReferenceConfig | None,
                          resolution: int | None = None, discriminator: nn.Module | None = None,
                          extractor: VGG19Features | None = None) -> torch.Tensor:
    if settings is None:
        return inpaint(inpainter, test.occluded, test.masks, resolution)
    realism = discriminator if settings.discriminator_weight > 0 else None
    return torch.cat([reference_guided_inpaint(inpainter, test.occluded[i:i + 1], test.masks[i:i + 1],
                                               test.references[i], settings, resolution, realism, extractor)
                      for i in range(len(test))])


def score_method(inpainter: nn.Module, test: SameIdentityTest, settings: ReferenceConfig | None,
                 lpips: LpipsScorer | Unavailable, resolution: int | None = None,
                 discriminator: nn.Module | None = None, extractor: VGG19Features | None = None
                 ) -> dict[str, float | str]:
    """One method's row: the scores inside the occluder, averaged over the people, local LPIPS (or
    why it is missing) and the wall seconds per image."""
    run = partial(same_identity_outputs, inpainter, test, settings, resolution, discriminator, extractor)
    output, seconds = timed(run, network_device(inpainter))
    scores = inpainting_metrics(output, test.clean, test.masks)
    row: dict[str, float | str] = {name: round(float(scores[name].mean()), 5) for name in SCORES}
    row["local_lpips"] = (lpips.reason if isinstance(lpips, Unavailable)
                          else round(float(lpips(output, test.clean, test.masks).mean()), 5))
    row["seconds_per_image"] = round(seconds / len(test), 4)
    return row


def score_same_identity(inpainter: nn.Module, test: SameIdentityTest, reference: ReferenceConfig,
                        lpips: LpipsScorer | Unavailable, steps: int | None = None, resolution: int | None = None,
                        discriminator: nn.Module | None = None) -> dict[str, dict[str, float | str]]:
    """Every method's row, by method name (METHODS); the inpainter must be invertible for the
    optimised ones (`pipeline.reference.check_invertible`)."""
    methods = method_settings(reference, steps)
    extractor = perceptual_extractor(methods["prior"])   # the same VGG19 for both optimised methods
    return {name: score_method(inpainter, test, settings, lpips, resolution, discriminator, extractor)
            for name, settings in methods.items()}
