"""LightningModule that trains an occluder segmenter handed to it as an nn.Module."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from pipeline.deocclusion import occluder_probability, opening
from pipeline.evaluation.metrics import segmentation_metrics
from pipeline.losses.reconstruction import weighted_sum
from pipeline.losses.segmentation import bce_dice
from pipeline.config import OptimizerConfig
from pipeline.models.layers import clip_batch_instance_gates
from pipeline.training.augment import flip_half
from pipeline.training.optim import build_optimizer, lightning_optimizers


class SegmenterModule(L.LightningModule):
    # The epoch kept as the stage's model: the best validation IoU of the predicted occluder mask.
    monitor = "val/iou"
    monitor_mode = "max"

    def __init__(self, net: nn.Module, optimizer: OptimizerConfig, loss_weights: dict[str, float],
                 threshold: float = 0.5, opening_kernel: int = 0, hflip: bool = False,
                 test_time_flip: bool = False) -> None:
        super().__init__()
        self.hflip = hflip
        self.test_time_flip = test_time_flip
        self.net = net
        self.optimizer_settings = optimizer
        self.threshold = threshold
        self.opening_kernel = opening_kernel
        self.loss_weights = loss_weights

    def forward(self, occluded_image: torch.Tensor) -> torch.Tensor:
        return self.net(occluded_image)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self.net(batch["occluded_image"]).float()
        with torch.autocast(self.device.type, enabled=False):  # BCE and Dice in fp32 under bf16-mixed
            terms = bce_dice(logits, batch["occluder_mask"], batch["label_map"])
        loss = weighted_sum(terms, self.loss_weights)
        batch_size = logits.shape[0]
        for name, value in terms.items():  # `_loss`: val/dice is the predicted mask's Dice score
            self.log(f"{stage}/{name}_loss", value, on_epoch=True, on_step=False, batch_size=batch_size, sync_dist=True)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=batch_size,
                 sync_dist=True)
        if stage == "val":
            # The kept epoch is chosen on the masks inference will draw.
            probability = occluder_probability(self.net, batch["occluded_image"], self.test_time_flip, logits)
            predicted = (probability > self.threshold).float()
            if self.opening_kernel > 1:  # paper 003 cleans masks in validation as at inference
                predicted = opening(predicted, self.opening_kernel)
            for name, values in segmentation_metrics(predicted, batch["occluder_mask"]).items():
                self.log(f"val/{name}", values.mean(), on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hflip:
            batch = flip_half(batch, self.global_step)
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_batch_end(self, outputs: object, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        clip_batch_instance_gates(self.net)  # after the optimizer step (paper 003's SA-UNet)

    def configure_optimizers(self) -> Any:
        return lightning_optimizers([build_optimizer(self.net.parameters(), self.optimizer_settings)],
                                    self.optimizer_settings, lambda: self.trainer.estimated_stepping_batches)
