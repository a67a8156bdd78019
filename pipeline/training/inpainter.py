"""LightningModules for the inpainter: trained on ground-truth masks, then fine-tuned on predicted ones.

With a discriminator the module trains a GAN by manual optimisation (one discriminator step, then
one generator step per batch); without one it is a plain reconstruction model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import nn

from pipeline.deocclusion import predict_masks
from pipeline.evaluation.metrics import inpainting_metrics
from pipeline.losses.adversarial import ADVERSARIAL_LOSSES
from pipeline.losses.perceptual import VGG19Features, perceptual_and_style
from pipeline.losses.reconstruction import hole_valid_l1, total_variation, weighted_sum
from pipeline.models.unet import compose_known_pixels
from pipeline.config import OptimizerConfig
from pipeline.models.layers import clip_batch_instance_gates
from pipeline.training.augment import flip_half
from pipeline.training.optim import build_optimizer, lightning_optimizers


class InpainterModule(L.LightningModule):
    """Trains `net(image, mask) -> I'` to restore the clean face under the occluder mask.

    Under bf16-mixed precision the networks run in bf16, the losses in fp32: Gram matrices sum
    C*H*W products and BCE takes logs, both beyond bf16's 8-bit mantissa.
    """

    # The epoch kept as the stage's model: the best validation PSNR inside the occluder, the pixels
    # the inpainter paints and the metric models are promoted on (not the loss, whose adversarial
    # term measures the discriminator as much as the inpainter).
    monitor = "val/psnr_masked"
    monitor_mode = "max"

    def __init__(self, net: nn.Module, optimizer: OptimizerConfig, loss_weights: dict[str, float],
                 discriminator: nn.Module | None = None, feature_extractor: VGG19Features | None = None,
                 adversarial_loss: str = "bce", discriminator_lr_scale: float = 1.0, hflip: bool = False) -> None:
        super().__init__()
        self.hflip = hflip
        self.discriminator_lr_scale = discriminator_lr_scale
        self.net = net
        self.discriminator = discriminator
        self.feature_extractor = feature_extractor
        self.optimizer_settings = optimizer
        self.loss_weights = loss_weights
        self.discriminator_loss, self.generator_loss = ADVERSARIAL_LOSSES[adversarial_loss]
        self.automatic_optimization = discriminator is None

    def occluder_mask_for(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["occluder_mask"]

    def reconstruction_terms(self, prediction: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction, clean, mask = prediction.float(), clean.float(), mask.float()
        with torch.autocast(self.device.type, enabled=False):
            terms = hole_valid_l1(prediction, clean, mask)
            terms["l1"] = (prediction - clean).abs().mean()            # L_rec = ||I' - I||_1, eq. 7
            terms["tv"] = total_variation(prediction)                   # paper 002, eq. 3
            if self.feature_extractor is not None:
                terms.update(perceptual_and_style(self.feature_extractor, prediction, clean))
        return terms

    def _fp32(self, loss: Callable[..., torch.Tensor], *logits: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return loss(*(value.float() for value in logits))

    def _log_terms(self, terms: dict[str, torch.Tensor], loss: torch.Tensor, stage: str, batch_size: int) -> None:
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_epoch=True, on_step=False, batch_size=batch_size, sync_dist=True)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=batch_size,
                 sync_dist=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hflip:
            batch = flip_half(batch, self.global_step)
        mask = self.occluder_mask_for(batch)
        prediction = self.net(batch["occluded_image"], mask)
        terms = self.reconstruction_terms(prediction, batch["clean_image"], mask)
        batch_size = prediction.shape[0]
        if self.discriminator is None:
            loss = weighted_sum(terms, self.loss_weights)
            self._log_terms(terms, loss, "train", batch_size)
            return loss
        generator_optimizer, discriminator_optimizer = self.optimizers()
        discriminator_loss = self._fp32(self.discriminator_loss, self.discriminator(batch["clean_image"]),
                                        self.discriminator(prediction.detach()))
        discriminator_optimizer.zero_grad()
        self.manual_backward(discriminator_loss)
        discriminator_optimizer.step()
        self.discriminator.requires_grad_(False)  # the generator step must not move D
        terms["adversarial"] = self._fp32(self.generator_loss, self.discriminator(prediction))
        loss = weighted_sum(terms, self.loss_weights)
        generator_optimizer.zero_grad()
        self.manual_backward(loss)
        generator_optimizer.step()
        for schedule in _as_list(self.lr_schedulers()):
            schedule.step()
        self.discriminator.requires_grad_(True)
        terms["discriminator"] = discriminator_loss.detach()
        self._log_terms(terms, loss, "train", batch_size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        mask = self.occluder_mask_for(batch)
        prediction = self.net(batch["occluded_image"], mask)
        terms = self.reconstruction_terms(prediction, batch["clean_image"], mask)
        weights = {k: v for k, v in self.loss_weights.items() if k in terms}
        self._log_terms(terms, weighted_sum(terms, weights), "val", prediction.shape[0])
        inpainted_face = compose_known_pixels(prediction.float(), batch["occluded_image"], mask)
        with torch.autocast(self.device.type, enabled=False):
            scores = inpainting_metrics(inpainted_face, batch["clean_image"], batch["occluder_mask"])
        for name in ("psnr", "psnr_masked", "ssim"):
            self.log(f"val/{name}", scores[name].mean(), on_epoch=True, batch_size=prediction.shape[0], sync_dist=True)

    def on_train_batch_end(self, outputs: object, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        clip_batch_instance_gates(self)  # after the optimizer steps, for networks with batch-instance norm

    def configure_optimizers(self) -> Any:
        optimizers = [build_optimizer(self.net.parameters(), self.optimizer_settings)]
        if self.discriminator is not None:
            discriminator_settings = replace(self.optimizer_settings, lr=self.optimizer_settings.lr * self.discriminator_lr_scale)
            optimizers.append(build_optimizer(self.discriminator.parameters(), discriminator_settings))
        # Manual optimisation (the GAN) steps every schedule once a batch, in training_step.
        return lightning_optimizers(optimizers, self.optimizer_settings, lambda: self.trainer.estimated_stepping_batches)


class JointFinetuneModule(InpainterModule):
    """Fine-tunes the inpainter (and its discriminator) on masks predicted by a frozen segmenter."""

    def __init__(self, net: nn.Module, segmenter: nn.Module, optimizer: OptimizerConfig,
                 loss_weights: dict[str, float], threshold: float = 0.5, segmenter_resolution: int | None = None,
                 opening_kernel: int = 0, test_time_flip: bool = False, **kwargs: object) -> None:
        super().__init__(net, optimizer, loss_weights, **kwargs)
        self.test_time_flip = test_time_flip
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.threshold = threshold
        self.segmenter_resolution = segmenter_resolution
        self.opening_kernel = opening_kernel

    def occluder_mask_for(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return predict_masks(self.segmenter, batch["occluded_image"], self.threshold, self.segmenter_resolution,
                             self.opening_kernel, test_time_flip=self.test_time_flip)

    def train(self, mode: bool = True) -> "JointFinetuneModule":
        super().train(mode)
        self.segmenter.eval()  # frozen: its norm statistics stay those it was trained with
        return self


def _as_list(schedules: Any) -> list[Any]:
    if schedules is None:
        return []
    return list(schedules) if isinstance(schedules, list) else [schedules]
