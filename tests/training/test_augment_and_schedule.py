import pytest
import torch

from pipeline.config import OptimizerConfig
from pipeline.training.augment import flip_half
from pipeline.training.optim import build_schedule, lightning_optimizers


def test_flip_half_mirrors_images_masks_and_labels_of_the_same_samples():
    images = torch.rand(32, 3, 8, 8)
    batch = {"occluded_image": images, "clean_image": images.clone(), "occluder_mask": images[:, :1].clone(),
             "label_map": (images[:, 0] * 3).long()}
    flipped = flip_half(batch, step=7)
    mirrored = [bool(torch.equal(flipped["occluded_image"][i], images[i].flip(-1))) for i in range(32)]
    assert 4 < sum(mirrored) < 28
    for i, was_mirrored in enumerate(mirrored):
        source = images[i].flip(-1) if was_mirrored else images[i]
        assert torch.equal(flipped["clean_image"][i], source)
        assert torch.equal(flipped["occluder_mask"][i], source[:1])
        assert torch.equal(flipped["label_map"][i], (source[0] * 3).long())
    assert torch.equal(flip_half(batch, step=7)["occluded_image"], flipped["occluded_image"])
    assert not torch.equal(flip_half(batch, step=8)["occluded_image"], flipped["occluded_image"])


def _learning_rates(settings: OptimizerConfig, steps: int) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    schedule = build_schedule(optimizer, settings, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_onecycle_warms_up_to_lr_then_anneals():
    rates = _learning_rates(OptimizerConfig(lr=1e-3, schedule="onecycle", warmup=0.2), 100)
    peak = max(range(100), key=rates.__getitem__)
    assert 15 <= peak <= 25 and rates[peak] == pytest.approx(1e-3)
    assert rates[0] < 1e-4 and rates[-1] < 1e-5


def test_constant_has_no_schedule_and_cosine_anneals():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert lightning_optimizers([optimizer], OptimizerConfig(lr=1e-3), lambda: 10) is optimizer
    rates = _learning_rates(OptimizerConfig(lr=1e-3, schedule="cosine"), 50)
    assert rates[0] == pytest.approx(1e-3) and rates[-1] < 1e-5


def test_an_unknown_schedule_is_refused(tmp_path):
    from pipeline.config import ConfigError, load_config
    from tests.conftest import tiny_params, write_params

    with pytest.raises(ConfigError, match="segmenter.optimizer.schedule must be"):
        load_config(write_params(tmp_path, tiny_params({"segmenter": {"optimizer": {"schedule": "step"}}})))


def _fit(module, epochs: int = 3) -> list[float]:
    """Fit `module` on 4 one-batch steps an epoch; the generator's learning rate before each step."""
    import lightning as L
    from torch.utils.data import DataLoader

    from tests.training.test_inpainter_module import batches

    rates = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[Record()])
    trainer.fit(module, DataLoader(batches() * 4, batch_size=None))
    return rates


def test_the_segmenter_and_the_gan_follow_their_one_cycle_schedule_step_by_step():
    from pipeline.models.registry import create_model
    from pipeline.training.inpainter import InpainterModule
    from pipeline.training.segmenter import SegmenterModule
    from tests.conftest import tiny_arch_kwargs

    settings = OptimizerConfig(lr=1e-3, schedule="onecycle", warmup=0.25)
    segmenter = SegmenterModule(create_model("unet-small", **tiny_arch_kwargs("unet-small")), settings, {"bce": 1.0},
                                hflip=True)
    gan = InpainterModule(create_model("mmrm-unet", **tiny_arch_kwargs("mmrm-unet")), settings, {"l1": 1.0, "adversarial": 0.01},
                          create_model("sn-patchgan", **tiny_arch_kwargs("sn-patchgan")), adversarial_loss="hinge", hflip=True)
    for module in (segmenter, gan):
        rates = _fit(module)
        assert len(rates) == 12
        peak = max(range(12), key=rates.__getitem__)
        assert 2 <= peak <= 4 and rates[peak] == pytest.approx(1e-3)
        assert rates[0] < 2e-4 and rates[-1] < rates[peak] / 5
