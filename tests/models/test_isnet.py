"""ISNet (paper 004): two branches through four phases, sub-pixel up-sampling, spectral norm
everywhere, its hinge-loss PatchGAN, and the paper's loss training it."""

import pytest
import torch
from torch import nn

from pipeline.config import OptimizerConfig
from pipeline.losses.adversarial import discriminator_hinge, generator_hinge
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.isnet import ISNet, ISNetDiscriminator
from pipeline.models.registry import count_parameters, create_model
from pipeline.training.inpainter import InpainterModule
from tests.conftest import tiny_arch_kwargs

TINY = tiny_arch_kwargs("isnet")


def spectral_normed(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


@pytest.mark.parametrize("size", [64, 128])
def test_generator_and_discriminator_shapes(size):
    torch.manual_seed(0)
    image, mask = torch.rand(2, 3, size, size), (torch.rand(2, 1, size, size) > 0.7).float()
    restored = create_model("isnet", **TINY).eval()(image, mask)
    assert restored.shape == (2, 3, size, size) and 0 <= restored.min() and restored.max() <= 1
    logits = create_model("isnet-patchgan", width=8)(image)
    assert logits.shape == (2, 1, size // 8, size // 8)


def test_two_branches_through_four_phases():
    net = ISNet(width=4, blocks=1).eval()
    shapes = []
    for phase in net.phases:
        phase.register_forward_hook(lambda module, args, output: shapes.append((output[0].shape, output[1].shape)))
    net(torch.rand(1, 3, 128, 128), torch.zeros(1, 1, 128, 128))
    # the high branch keeps 128 px and 4 channels; the low one halves and doubles (32 / 64 / ... at width 32)
    assert shapes == [((1, 4, 128, 128), (1, 4 * 2 ** n, 128 // 2 ** n, 128 // 2 ** n)) for n in range(1, 5)]
    # Interaction: phase n brings the high branch down by n stride-2 convs and the low one up by n - 1
    # sub-pixel layers; Final Fusion brings the last low branch up by four.
    strided = [sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in p.high_down.modules()) for p in net.phases]
    shuffles = [sum(isinstance(m, nn.PixelShuffle) for m in p.modules()) for p in net.phases]
    assert strided == [1, 2, 3, 4] and shuffles == [0, 1, 2, 3]
    assert sum(isinstance(m, nn.PixelShuffle) for m in net.fusion_up.modules()) == 4
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.rand(1, 3, 40, 40), torch.zeros(1, 1, 40, 40))


def test_spectral_norm_on_every_convolution_of_both_networks():
    for net in (ISNet(**TINY), ISNetDiscriminator(width=8)):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(spectral_normed(m) for m in convs)
    assert sum(isinstance(m, nn.Conv2d) for m in ISNetDiscriminator(width=8).modules()) == 5
    strides = [m.stride[0] for m in ISNetDiscriminator(width=8).modules() if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2, 1, 1]


def test_parameter_count_matches_table_8():
    # Table 8 (M = 2^20): 23.63 M with four residual blocks per phase (18.99 M with one: 18.88 M here)
    assert abs(count_parameters(ISNet()) / 2 ** 20 - 23.63) / 23.63 < 0.01


def test_ablations_drop_what_they_name():
    assert create_model("isnet-no-final-fusion", **TINY).fusion_up is None
    plain = create_model("isnet-no-sub-pixel", **TINY)
    assert not any(isinstance(m, nn.PixelShuffle) for m in plain.modules())
    # `pretrained` (the section's flag, for the perceptual VGG19) is accepted: ISNet has no backbone to load
    assert isinstance(create_model("isnet", pretrained=True, **TINY), ISNet)


def test_the_papers_objective_falls_over_a_few_gan_steps_on_a_fixed_batch():
    """Eq. 5 as params.yaml's paper-isnet writes it (perceptual.py averages over pool1-pool3, the
    paper sums: weights 3 and 9 for its 1 and 3), the hinge loss, the discriminator at lr / 10."""
    torch.manual_seed(0)
    clean = torch.rand(4, 3, 32, 32)
    mask = (torch.rand(4, 1, 32, 32) > 0.6).float()
    generator, discriminator = create_model("isnet", **TINY), create_model("isnet-patchgan", width=8)
    weights = {"l1": 1.0, "adversarial": 3.0, "perceptual": 3.0, "style": 9.0}
    module = InpainterModule(generator, OptimizerConfig("adam", 3e-3), weights, discriminator,
                             VGG19Features(("pool1", "pool2", "pool3"), weights="random"),
                             adversarial_loss="hinge", discriminator_lr_scale=0.1)
    generator_optimizer, discriminator_optimizer = module.configure_optimizers()
    assert discriminator_optimizer.param_groups[0]["lr"] == pytest.approx(generator_optimizer.param_groups[0]["lr"] / 10)
    occluded = clean * (1 - mask) + mask

    def reconstruction(prediction: torch.Tensor) -> torch.Tensor:
        terms = module.reconstruction_terms(prediction, clean, mask)
        return sum(weights[name] * terms[name] for name in ("l1", "perceptual", "style"))

    with torch.no_grad():
        first = float(reconstruction(generator(occluded, mask)))
    for _ in range(3):
        prediction = generator(occluded, mask)
        discriminator_loss = discriminator_hinge(discriminator(clean), discriminator(prediction.detach()))
        discriminator_optimizer.zero_grad()
        discriminator_loss.backward()
        discriminator_optimizer.step()
        loss = reconstruction(prediction) + weights["adversarial"] * generator_hinge(discriminator(prediction))
        generator_optimizer.zero_grad()
        loss.backward()
        generator_optimizer.step()
    with torch.no_grad():
        assert float(reconstruction(generator(occluded, mask))) < first
