"""A linear model of the training faces that fills a hole from the pixels around it (`hole_fill: eigenface`).

The faces are modelled as a Gaussian of low rank: the mean of the training split's clean images
(mirrored too) and their first principal directions, each coefficient with the variance the
training faces show along it. Given an image's visible pixels, the posterior mean of the
coefficients draws the hidden ones: eyes, mouth and the edges of the face where the visible part
implies them, which no smooth interpolation can. What the model misses at the hole's edge (the
visible pixels' residual) is carried into the hole by the harmonic fill, so the fill meets the
known pixels. On the quick profile's test faces, inside the ground-truth mask: 18.40 dB against
17.47 for the harmonic fill alone and 16.81 for Telea (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_FITTED = ("mean", "basis", "precision")


def _solve_positive_definite(systems: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x with systems @ x = rhs, (B, K, K) and (B, K), by Cholesky: the posterior's systems are symmetric
    and positive definite (the prior's precision plus the visible pixels' Gram matrix). Batched LU
    (`torch.linalg.solve`) fails in torch 2.13's CPU build once `torch.set_num_threads` has been called
    before the first solve ("Pivots given to lu_solve must all be greater or equal to 1"); Cholesky does
    not, in half the arithmetic. A system rounding left short of definite is solved by LU, one at a time
    (a batch of one is not affected)."""
    factor, info = torch.linalg.cholesky_ex(systems)
    solution = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    failed = info.nonzero().flatten()
    if failed.numel():
        solution[failed] = torch.stack([torch.linalg.solve(systems[index], rhs[index]) for index in failed])
    return solution


class EigenfacePrior(nn.Module):
    """`components` principal directions of the training faces, fitted by `fit` (not by gradients:
    buffers, saved with the network). `strength` is the noise variance a visible pixel is given (in
    pixel values squared) against each direction's variance over the faces: the larger, the harder
    the fill is pulled towards the mean face."""

    def __init__(self, components: int = 256, strength: float = 0.3) -> None:
        super().__init__()
        if components < 1 or strength <= 0:
            raise ValueError(f"eigenface prior: components must be >= 1 and strength > 0, got {components}, {strength}")
        self.components = components
        self.strength = strength
        for name in _FITTED:
            self.register_buffer(name, torch.empty(0))
        self._block_grams: torch.Tensor | None = None   # derived from the basis when first needed; not saved

    @property
    def fitted(self) -> bool:
        return self.basis.numel() > 0

    @torch.no_grad()
    def fit(self, faces: torch.Tensor, seed: int = 0) -> None:
        """Fit to clean faces (N, 3, H, W) in [0, 1], each also mirrored left-right; a randomized
        truncated SVD with its own seeded generator state, so the same faces give the same prior."""
        if faces.dim() != 4 or faces.shape[0] < 2:
            raise ValueError(f"eigenface prior: needs at least 2 faces (N, C, H, W), got shape {tuple(faces.shape)}")
        samples = torch.cat([faces, faces.flip(-1)]).flatten(1).float()
        mean = samples.mean(0)
        rank = min(self.components, *samples.shape)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            _, singular, directions = torch.svd_lowrank(samples - mean, q=min(rank + 10, *samples.shape), niter=3)
        self._block_grams = None
        device = self.basis.device                  # where the network is, whatever the faces' device
        self.mean = mean.view(faces.shape[1:]).to(device)
        self.basis = directions[:, :rank].T.contiguous().to(device)
        variance = singular[:rank].square().clamp_min(1e-8) / samples.shape[0]
        self.precision = (self.strength / variance).to(device)

    def posterior_mean(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W): the face the model finds most likely given the pixels outside the mask."""
        if not self.fitted:
            raise RuntimeError("eigenface prior: not fitted; the inpainter's training fits it to the training faces")
        if tuple(image.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"eigenface prior: fitted to images {tuple(self.mean.shape)}, got {tuple(image.shape[1:])}")
        with torch.autocast(image.device.type, enabled=False):
            # fp32 whatever the buffers were cast to (bf16-true): the solve relies on orthonormal rows
            mean, basis, precision = self.mean.float().flatten(), self.basis.float(), self.precision.float()
            hidden = occluder_mask[:, 0] > 0                                 # (B, H, W), one mask for every channel
            centred = (image.float().flatten(1) - mean) * ~hidden[:, None].expand_as(image).flatten(1)
            rhs = centred @ basis.T                                         # (B, K): B V^T y over the visible pixels
            # V V^T = I: the visible Gram matrix is I minus the hidden columns'
            systems = torch.diag(1 + precision) - self._hidden_gram(basis, hidden)
            coefficients = _solve_positive_definite(systems, rhs)
            return (mean + coefficients @ basis).view_as(image).clamp(0, 1)

    def _hidden_gram(self, basis: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, K): the basis' Gram matrix over each image's hidden pixels, all channels. Blocks of
        pixels hidden whole add their Gram matrix, computed once per fitted basis; the pixels of blocks
        hidden in part add their own columns. The same sum as over every hidden column, in a third of
        the time at 64 px (gathering thousands of columns per image was most of the fill's cost)."""
        count, height, width = hidden.shape
        components = basis.shape[0]
        block = self._block_side(height, width, components)
        columns = basis.view(components, -1, height * width)
        gram = basis.new_zeros(count, components, components)
        partial = hidden
        if block:
            if self._block_grams is None or self._block_grams.dtype != basis.dtype or self._block_grams.device != basis.device:
                tiles = basis.view(components, -1, height // block, block, width // block, block)
                tiles = tiles.permute(2, 4, 0, 1, 3, 5).reshape(-1, components, tiles.shape[1] * block * block)
                self._block_grams = (tiles @ tiles.transpose(1, 2)).flatten(1)   # (blocks, K * K)
            whole = hidden.view(count, height // block, block, width // block, block).all(4).all(2)
            gram += (whole.flatten(1).to(basis.dtype) @ self._block_grams).view(count, components, components)
            cells = whole.shape[1:]
            partial = hidden & ~whole[:, :, None, :, None].expand(count, cells[0], block, cells[1], block).reshape_as(hidden)
        for index, pixels in enumerate(partial.flatten(1)):
            chosen = columns[:, :, pixels].reshape(components, -1)
            gram[index] += chosen @ chosen.T
        return gram

    @staticmethod
    def _block_side(height: int, width: int, components: int) -> int | None:
        """The smallest block side dividing the image whose blocks' Gram matrices take at most 64 MiB
        (256 blocks at 256 components); None where none does (every hidden column gathered)."""
        most = min(256, (1 << 24) // (components * components))
        return next((side for side in (2, 4, 8, 16, 32, 64)
                     if height % side == 0 and width % side == 0 and (height // side) * (width // side) <= most), None)

    def fill(self, image: torch.Tensor, occluder_mask: torch.Tensor) -> torch.Tensor:
        """The image with its hidden pixels drawn by the model, plus the harmonic fill of the
        visible pixels' residual; the visible pixels unchanged."""
        from pipeline.models.mmrm_unet import smooth_fill

        with torch.autocast(image.device.type, enabled=False):
            image = image.float()
            face = self.posterior_mean(image, occluder_mask)
            residual = smooth_fill((image - face + 1) / 2, occluder_mask) * 2 - 1
            return torch.where(occluder_mask > 0, (face + residual).clamp(0, 1), image)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_block_grams": None}      # a pickled or copied model (mlflow.pytorch) carries no cache

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "EigenfacePrior":
        self._block_grams = None                   # a move or cast of the basis makes a new one
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        self._block_grams = None
        for name in _FITTED:                       # the fitted shapes come with the checkpoint
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name], device=self.basis.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"components={self.components}, strength={self.strength}, fitted={self.fitted}"
