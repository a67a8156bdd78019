"""SA-UNet's batch-instance-norm gate: used as is in forward, clipped to [0, 1] after each step;
the segmenter trains under bf16-mixed on a CPU; validation logs the loss terms apart from the mask's scores."""

import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.config import OptimizerConfig
from pipeline.evaluation.metrics import segmentation_metrics
from pipeline.losses.segmentation import bce_dice
from pipeline.models.layers import BatchInstanceNorm2d
from pipeline.models.registry import create_model
from pipeline.training.segmenter import SegmenterModule
from tests.conftest import tiny_arch_kwargs


def batches(count: int = 4, size: int = 64) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    images = torch.rand(count, 3, size, size)
    masks = (torch.rand(count, 1, size, size) > 0.7).float()
    return [{"occluded_image": images, "occluder_mask": masks, "label_map": (masks[:, 0] * 2).long()}]


def fit_steps(module: L.LightningModule, steps: int, precision: str = "32") -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(batches() * steps, batch_size=None))
    return trainer


def test_the_gate_is_not_clamped_in_forward_so_its_gradient_lives_at_the_bounds():
    torch.manual_seed(0)
    norm, features = BatchInstanceNorm2d(4), torch.randn(2, 4, 8, 8)
    weights = torch.randn(2, 4, 8, 8)
    at_bound = (norm(features) * weights).sum()
    with torch.no_grad():
        norm.rho.fill_(1.5)
    beyond = (norm(features) * weights).sum()
    beyond.backward()
    assert not torch.isclose(at_bound, beyond)
    assert norm.rho.grad.abs().min() > 0


def test_the_gate_is_clipped_to_0_1_after_each_optimizer_step():
    torch.manual_seed(0)
    net = create_model("sa-unet", **tiny_arch_kwargs("sa-unet"))
    # Adam moves every parameter by about lr per step: 0.6 takes gates from 1 well past both bounds.
    fit_steps(SegmenterModule(net, OptimizerConfig("adam", 0.6), {"bce": 1.0}), steps=3)
    gates = torch.cat([m.rho.detach() for m in net.modules() if isinstance(m, BatchInstanceNorm2d)])
    assert gates.min() >= 0 and gates.max() <= 1
    assert (gates == 0).any() and (gates < 1).any()


def test_the_segmenter_trains_in_bf16_mixed_on_a_cpu():
    net = create_model("soclnet", **tiny_arch_kwargs("soclnet"))
    before = [p.detach().clone() for p in net.parameters()]
    trainer = fit_steps(SegmenterModule(net, OptimizerConfig("adam", 1e-3), {"bce": 1.0, "dice": 1.0}), steps=2,
                        precision="bf16-mixed")
    assert trainer.precision == "bf16-mixed"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_validation_logs_the_soft_dice_loss_apart_from_the_predicted_masks_dice_score():
    torch.manual_seed(0)
    net = create_model("sa-unet", **tiny_arch_kwargs("sa-unet"))
    module = SegmenterModule(net, OptimizerConfig("adam", 1e-3), {"bce": 1.0, "dice": 1.0})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    batch = batches()[0]
    trainer.validate(module, DataLoader([batch], batch_size=None), verbose=False)
    net.eval()
    with torch.no_grad():
        logits = net(batch["occluded_image"])
    soft = bce_dice(logits, batch["occluder_mask"], batch["label_map"])["dice"]
    hard = segmentation_metrics((torch.sigmoid(logits) > 0.5).float(), batch["occluder_mask"])["dice"].mean()
    assert torch.isclose(trainer.callback_metrics["val/dice_loss"], soft, atol=1e-5)
    assert torch.isclose(trainer.callback_metrics["val/dice"], hard, atol=1e-5)
    assert not torch.isclose(soft, 1 - hard, atol=1e-3)
