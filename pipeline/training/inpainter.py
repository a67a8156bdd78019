"""LightningModules for the inpainter: trained on ground-truth masks, then fine-tuned on predicted ones."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from pipeline.evaluation.metrics import inpainting_metrics
from pipeline.losses.reconstruction import hole_valid_l1, weighted_sum
from pipeline.models.unet import compose_known_pixels


class InpainterModule(L.LightningModule):
    """Trains `net(image, mask) -> prediction` to restore the clean face under the occluder mask."""

    def __init__(self, net: nn.Module, lr: float, loss_weights: dict[str, float]) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.loss_weights = loss_weights

    def occluder_mask_for(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["occluder_mask"]

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        occluder_mask = self.occluder_mask_for(batch)
        prediction = self.net(batch["occluded_image"], occluder_mask)
        terms = hole_valid_l1(prediction, batch["clean_image"], occluder_mask)
        loss = weighted_sum(terms, self.loss_weights)
        batch_size = prediction.shape[0]
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_epoch=True, on_step=False, batch_size=batch_size)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=batch_size)
        if stage == "val":
            inpainted_face = compose_known_pixels(prediction, batch["occluded_image"], occluder_mask)
            scores = inpainting_metrics(inpainted_face, batch["clean_image"], batch["occluder_mask"])
            for name in ("psnr", "psnr_masked", "ssim"):
                self.log(f"val/{name}", scores[name].mean(), on_epoch=True, batch_size=batch_size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


class JointFinetuneModule(InpainterModule):
    """Fine-tunes the inpainter on masks predicted by a frozen segmenter instead of ground truth."""

    def __init__(self, net: nn.Module, segmenter: nn.Module, lr: float, loss_weights: dict[str, float],
                 threshold: float = 0.5) -> None:
        super().__init__(net, lr, loss_weights)
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.threshold = threshold

    def occluder_mask_for(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return (torch.sigmoid(self.segmenter(batch["occluded_image"])) > self.threshold).float()

    def train(self, mode: bool = True) -> "JointFinetuneModule":
        super().train(mode)
        self.segmenter.eval()  # frozen: its norm statistics stay those it was trained with
        return self
