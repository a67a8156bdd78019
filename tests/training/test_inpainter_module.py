import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.config import OptimizerConfig
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.registry import create_model
from pipeline.training.inpainter import InpainterModule, JointFinetuneModule
from tests.conftest import tiny_arch_kwargs


def batches(count: int = 4, size: int = 32) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    clean = torch.rand(count, 3, size, size)
    mask = (torch.rand(count, 1, size, size) > 0.7).float()
    return [{"occluded_image": clean * (1 - mask) + 0.5 * mask, "clean_image": clean, "occluder_mask": mask,
             "label_map": (mask[:, 0] * 2).long()}]


def fit_steps(module: L.LightningModule, steps: int = 2) -> None:
    data = batches()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(data * steps, batch_size=None))


def snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters() if p.requires_grad]


def test_gan_step_updates_generator_and_discriminator():
    generator = create_model("ifacenet", **tiny_arch_kwargs("ifacenet"))
    discriminator = create_model("patchgan", width=8)
    module = InpainterModule(generator, OptimizerConfig("adam", 1e-3), {"l1": 1.7, "perceptual": 4.0, "style": 3.6,
                             "adversarial": 4.7}, discriminator, VGG19Features(("relu1_1", "relu2_1"), weights="random"))
    before_g, before_d = snapshot(generator), snapshot(discriminator)
    fit_steps(module)
    assert not module.automatic_optimization
    assert any(not torch.equal(a, b) for a, b in zip(before_g, snapshot(generator)))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, snapshot(discriminator)))
    assert all(p.requires_grad for p in discriminator.parameters())


def test_finetune_trains_on_the_segmenters_masks_and_leaves_it_frozen():
    segmenter = create_model("soclnet", **tiny_arch_kwargs("soclnet"))
    inpainter = create_model("unet-inpainter", **tiny_arch_kwargs("unet-inpainter"))
    module = JointFinetuneModule(inpainter, segmenter, OptimizerConfig("adam", 1e-3), {"hole_l1": 1.0}, threshold=0.5)
    batch = batches()[0]
    with torch.no_grad():
        expected = (torch.sigmoid(segmenter.eval()(batch["occluded_image"])[:, -1:]) > 0.5).float()
    torch.testing.assert_close(module.occluder_mask_for(batch), expected)
    before = snapshot(segmenter) if any(p.requires_grad for p in segmenter.parameters()) else \
        [p.detach().clone() for p in segmenter.parameters()]
    fit_steps(module)
    assert all(torch.equal(a, b) for a, b in zip(before, [p.detach() for p in segmenter.parameters()]))
    assert not segmenter.training


def test_the_gan_trains_in_bf16_mixed_on_a_cpu_with_fp32_losses():
    generator = create_model("ifacenet", **tiny_arch_kwargs("ifacenet"))
    module = InpainterModule(generator, OptimizerConfig("adam", 1e-3), {"l1": 1.7, "perceptual": 4.0, "style": 3.6,
                             "adversarial": 4.7}, create_model("patchgan", width=8),
                             VGG19Features(("relu1_1", "relu2_1"), weights="random"))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    batch = batches()[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = module.reconstruction_terms(generator(batch["occluded_image"], batch["occluder_mask"]),
                                            batch["clean_image"], batch["occluder_mask"])
    assert all(value.dtype == torch.float32 for value in terms.values())
    trainer.fit(module, DataLoader(batches() * 2, batch_size=None))
    assert all(torch.isfinite(trainer.callback_metrics[f"train/{name}"]) for name in ("loss", "style", "discriminator"))


def test_the_discriminator_learns_at_its_own_rate():
    net = create_model("mmrm-unet", **tiny_arch_kwargs("mmrm-unet"))
    discriminator = create_model("sn-patchgan", **tiny_arch_kwargs("sn-patchgan"))
    module = InpainterModule(net, OptimizerConfig(name="adam", lr=2e-4), {"l1": 0.95, "tv": 0.04, "adversarial": 0.01},
                             discriminator, adversarial_loss="hinge", discriminator_lr_scale=0.1)
    generator_optimizer, discriminator_optimizer = module.configure_optimizers()
    assert generator_optimizer.param_groups[0]["lr"] == 2e-4
    assert discriminator_optimizer.param_groups[0]["lr"] == 2e-4 * 0.1
    before = snapshot(net)
    fit_steps(module)   # paper 002's loss (adversarial + L1 + TV) trains the MMRM U-Net GAN
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(net)))
