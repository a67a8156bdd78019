"""Reference-guided de-occlusion: paper 001's GAN inversion with clean references, on our inpainters.

Paper 001 inverts a pretrained StyleGAN: an encoder gives the occluded face's latent (hybrid
inversion), then Adam optimises it under eq. 2,

    lambda_1 L_rec + lambda_2 L_perc + lambda_3 L_gauss + lambda_4 (-D(G(z))),

with L_gauss (eq. 5) built from Gaussians centred on the latents of K clean photographs of the same
person and lambda_3 = 2 sigmoid(k (x - x0)) (eq. 7), x the occluded percentage.

No pretrained StyleGAN can be had here, so the generator is our own inpainter, split in two: every
supported inpainter provides `encode(image, mask) -> (latent, skips)` and `decode(latent, skips)`,
with `decode(*encode(...))` its forward pass (an MMRM U-Net with any `hole_fill` but `white`
also takes the fill it corrects, `fill_base(image, mask)`, in both). The latent is the bottleneck: IFACENET's fused
ensemble features F_N1 (its decoder reads nothing else), the U-Nets' deepest features. The occluded
image's latent starts the optimisation; each reference's latent is the encoder's output for the
clean reference with an empty mask. Only the latent moves: a U-Net's skip features stay those of the
occluded input (its hole is white or filled there), so on a U-Net the prior acts through the bottleneck alone,
and the shallow skips still carry the hole's fill; IFACENET, the default, has no skips.

Two departures from the paper, both for numerical reasons:
- L_gauss is the negative log of the equal mixture of the K Gaussians, -log (1/K) sum_i
  N(z; z_i, sigma^2 I), not eq. 5's -sum_i exp(-||z - z_i|| / (2 sigma^2)). In a latent of thousands
  of elements every exp(...) underflows and eq. 5 has no gradient; the log keeps it. With one
  reference, or all references close, it is -log N(z; mean of the references, sigma^2 I).
- Distances are mean squared per element, divided by the references' mean square, so sigma is a
  relative RMS distance whatever the latent's size and scale.
The reconstruction and perceptual terms see the visible pixels only (the occluder is no target).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ReferenceConfig
from pipeline.data.dataset import image_to_tensor, tensor_to_image
from pipeline.deocclusion import Deoccluder, keep_black_and_white, network_device, resize
from pipeline.errors import DeoccludeError
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.unet import compose_known_pixels

logger = logging.getLogger(__name__)


class ReferenceGuidanceError(DeoccludeError, ValueError):
    """The inpainter cannot be inverted, or the references do not fit."""


def prior_weight(occluded_share: torch.Tensor | float, k: float, x0: float) -> torch.Tensor:
    """Paper 001 eq. 7: lambda_3 = 2 sigmoid(k (x - x0)), x the occluded percentage (share * 100).
    The paper counts the face's pixels; without a face mask at inference, ours counts the image's."""
    share = torch.as_tensor(occluded_share, dtype=torch.float32)
    return 2 * torch.sigmoid(k * (share * 100 - x0))


def reference_prior(latent: torch.Tensor, reference_latents: torch.Tensor, sigma: float,
                    scale: torch.Tensor | float = 1.0, region: torch.Tensor | None = None) -> torch.Tensor:
    """-log (1/K) sum_i N(latent; reference_i, sigma^2 I), per element and up to a constant.

    latent (1, C, h, w), reference_latents (K, C, h, w); distances are mean squared per element over
    `scale` (the references' mean square), so the value is 0 on a reference and d / (2 sigma^2) at
    relative squared distance d from all of them. `region` (1, 1, h, w) in [0, 1] weights the
    latent's cells (None: all alike)."""
    squared = (latent - reference_latents).pow(2)                                         # (K, C, h, w)
    if region is None:
        distance = squared.flatten(1).mean(dim=1) / scale                                  # (K,)
    else:
        cells = region.expand_as(latent)
        distance = (squared * cells).flatten(1).sum(dim=1) / cells.sum().clamp_min(1) / scale
    return -(torch.logsumexp(-distance / (2 * sigma ** 2), dim=0) - math.log(len(reference_latents)))


def hidden_cells(occluder_mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) -> (1, 1, h, w): the share of each latent cell's pixels the occluder hides."""
    return F.adaptive_avg_pool2d(occluder_mask.float(), latent.shape[-2:])


def visible_reconstruction(decoded: torch.Tensor, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on the pixels the occluder leaves visible: their mean squared error."""
    visible = 1 - occluder_mask
    return ((decoded - image).pow(2) * visible).sum() / (visible.sum() * image.shape[1]).clamp_min(1)


def visible_perceptual(extractor: VGG19Features, decoded: torch.Tensor, image: torch.Tensor,
                       occluder_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4 with the hole blanked in both images: the mean over layers of the features' L1 distance."""
    visible = 1 - occluder_mask
    predicted = extractor(decoded * visible)
    with torch.no_grad():
        target = extractor(image * visible)
    return sum(F.l1_loss(p, t) for p, t in zip(predicted, target)) / len(predicted)


def check_invertible(inpainter: nn.Module) -> None:
    if not (callable(getattr(inpainter, "encode", None)) and callable(getattr(inpainter, "decode", None))):
        raise ReferenceGuidanceError(
            f"{type(inpainter).__name__} has no encode/decode split, so it cannot be inverted; "
            "reference-guided de-occlusion supports ifacenet, unet-inpainter and mmrm-unet (and their variants)")


def perceptual_extractor(settings: ReferenceConfig) -> VGG19Features | None:
    """The VGG19 of the perceptual term, as `settings` says; None when the term is off or dropped."""
    weights = settings.perceptual_weights
    if settings.perceptual_weight == 0 or weights == "none":
        return None
    return VGG19Features(settings.perceptual_layers, weights=weights)


@contextmanager
def _frozen(networks: Sequence[nn.Module]) -> Iterator[None]:
    """No gradients into the networks' weights while the latent is optimised; their flags restored after."""
    flags = [(parameter, parameter.requires_grad) for net in networks for parameter in net.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@dataclass
class Inversion:
    """One image's optimisation: the composited output and each step's terms (before the step)."""

    output: torch.Tensor                                   # (1, 3, H, W), known pixels from the input
    latent: torch.Tensor                                   # the optimised latent
    prior_weight: float
    trace: list[dict[str, float]] = field(default_factory=list)


def invert_with_references(inpainter: nn.Module, image: torch.Tensor, occluder_mask: torch.Tensor,
                           references: torch.Tensor, settings: ReferenceConfig,
                           discriminator: nn.Module | None = None,
                           extractor: VGG19Features | None = None) -> Inversion:
    """Optimise one occluded image's latent (image (1, 3, H, W), mask (1, 1, H, W), references
    (K, 3, H, W), all at the inpainter's resolution and on its device) and decode it."""
    check_invertible(inpainter)
    if references.ndim != 4 or len(references) == 0:
        raise ReferenceGuidanceError(f"references must be (K, 3, H, W) with K >= 1, got shape {tuple(references.shape)}")
    networks = [net.eval() for net in (inpainter, discriminator) if net is not None]
    with torch.enable_grad(), _frozen(networks):
        with torch.no_grad():
            base = inpainter.fill_base(image, occluder_mask) if hasattr(inpainter, "fill_base") else None
            decode_options = {} if base is None else {"base": base}
            start, skips = inpainter.encode(image, occluder_mask, **decode_options)
            reference_latents, _ = inpainter.encode(references, torch.zeros_like(references[:, :1]))
            scale = reference_latents.pow(2).mean().clamp_min(1e-8)
            region = hidden_cells(occluder_mask, start) if settings.prior_region == "hidden" else None
        weight = prior_weight(occluder_mask.float().mean(), settings.k, settings.x0).item()
        # Adam moves every element by about lr a step: optimising the latent over its RMS makes lr
        # relative, the same for IFACENET's small fused features as for a U-Net's bottleneck.
        rms = scale.sqrt()
        normalised = (start / rms).detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([normalised], lr=settings.lr)
        trace: list[dict[str, float]] = []
        for _ in range(settings.steps):
            latent = normalised * rms
            decoded = inpainter.decode(latent, skips, **decode_options)
            terms = {"reconstruction": visible_reconstruction(decoded, image, occluder_mask),
                     "prior": reference_prior(latent, reference_latents, settings.sigma, scale, region)}
            if extractor is not None:
                terms["perceptual"] = visible_perceptual(extractor, decoded, image, occluder_mask)
            if discriminator is not None and settings.discriminator_weight > 0:
                terms["realism"] = -discriminator(decoded).mean()              # eq. 6: -D(G(z))
            weights = {"reconstruction": settings.reconstruction_weight, "prior": weight,
                       "perceptual": settings.perceptual_weight, "realism": settings.discriminator_weight}
            loss = sum(weights[name] * value for name, value in terms.items())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append({name: float(value.detach()) for name, value in terms.items()} | {"loss": float(loss.detach())})
    with torch.no_grad():
        latent = normalised.detach() * rms
        decoded = inpainter.decode(latent, skips, **decode_options).float()
    return Inversion(compose_known_pixels(decoded, image, occluder_mask), latent, weight, trace)


def reference_guided_inpaint(inpainter: nn.Module, occluded_image: torch.Tensor, occluder_mask: torch.Tensor,
                             references: torch.Tensor, settings: ReferenceConfig, resolution: int | None = None,
                             discriminator: nn.Module | None = None,
                             extractor: VGG19Features | None = None) -> torch.Tensor:
    """`inpaint` with references: (N, 3, H, W) images of one person, their masks, (K, 3, h, w) clean
    references of that person -> (N, 3, H, W) with the known pixels of the input."""
    device = network_device(inpainter)
    size = tuple(occluded_image.shape[-2:])
    side = (resolution, resolution) if resolution else size
    references = resize(references.to(device), side)
    for network in (extractor, discriminator):
        if network is not None:
            network.to(device)
    outputs = []
    for image, mask in zip(occluded_image.split(1), occluder_mask.split(1)):
        image, mask = image.to(device), mask.to(device)
        if not mask.any():   # nothing hidden: nothing to paint
            outputs.append(image.to(occluded_image.device))
            continue
        # Any pixel touched by the occluder counts as hidden at the model's resolution.
        small_image, small_mask = resize(image, side), (resize(mask, side) > 0).float()
        inversion = invert_with_references(inpainter, small_image, small_mask, references, settings,
                                           discriminator, extractor)
        logger.debug("reference-guided: prior weight %.3f, loss %.4f -> %.4f", inversion.prior_weight,
                     inversion.trace[0]["loss"], inversion.trace[-1]["loss"])
        prediction = resize(inversion.output, size)
        outputs.append(compose_known_pixels(prediction, image, mask).to(occluded_image.device))
    return torch.cat(outputs)


def deocclude_with_references(deoccluder: Deoccluder, image: np.ndarray, references: Sequence[np.ndarray],
                              settings: ReferenceConfig, discriminator: nn.Module | None = None,
                              extractor: VGG19Features | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 and K clean (h, w, 3) uint8 photographs of the same person, any sizes ->
    (mask (H, W) uint8 0/255, de-occluded image (H, W, 3) uint8), as `Deoccluder.__call__`."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if not references:
        raise ReferenceGuidanceError("reference-guided de-occlusion needs at least one reference image")
    side = deoccluder.inpainter_resolution
    reference_batch = torch.cat([resize(image_to_tensor(reference)[None], (side, side)) for reference in references])
    original = image_to_tensor(image)[None]                                         # (1, 3, H, W)
    mask = deoccluder.masks(original)
    output = reference_guided_inpaint(deoccluder.inpainter, original, mask, reference_batch, settings, side,
                                      discriminator, extractor)
    output = keep_black_and_white(output, original, mask)
    return (mask[0, 0].numpy() * 255).astype(np.uint8), tensor_to_image(output[0])
