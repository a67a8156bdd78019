"""Reference-guided de-occlusion (paper 001 on our inpainters): the prior, its weight, the split."""

from dataclasses import replace

import pytest
import torch

from pipeline.config import ConfigError, ReferenceConfig, reference_config
from pipeline.models.registry import create_model, list_models
from pipeline.models.unet import compose_known_pixels
from pipeline.reference import (ReferenceGuidanceError, hidden_cells, invert_with_references, perceptual_extractor,
                                prior_weight, reference_guided_inpaint, reference_prior)
from tests.conftest import tiny_arch_kwargs

# Few steps, no VGG19: each test runs in a second or two.
FAST = ReferenceConfig(steps=12, lr=0.05, perceptual_fallback="none", discriminator_weight=0.0)


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **tiny_arch_kwargs(name)).eval()


def test_the_prior_weight_is_eq_7_and_rises_with_the_occluded_share():
    shares = torch.linspace(0, 1, 101)
    weights = prior_weight(shares, k=0.25, x0=30)
    assert (weights[1:] >= weights[:-1]).all()
    assert (weights[1:61] > weights[:60]).all()                              # strictly over our 1-60 % masks
    assert prior_weight(0.30, 0.25, 30).item() == pytest.approx(1.0)        # 2 sigmoid(0) at the shift
    assert 0 < weights.min() and weights.max() <= 2


def test_the_prior_is_zero_on_a_lone_reference_and_quadratic_away_from_it():
    reference = torch.randn(1, 4, 8, 8)
    assert reference_prior(reference, reference, sigma=0.5).item() == pytest.approx(0.0, abs=1e-6)
    shifted = reference + 1.0
    assert reference_prior(shifted, reference, sigma=0.5).item() == pytest.approx(1.0 / (2 * 0.25))


def test_the_hidden_region_prior_sees_only_the_cells_under_the_occluder():
    reference, latent = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    latent[..., :2, :] = 3.0                                                  # far off, but only where nothing is hidden
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:, :] = 1
    region = hidden_cells(mask, latent)
    assert region[0, 0, :, 0].tolist() == [0, 0, 1, 1]
    assert reference_prior(latent, reference, sigma=0.5, region=region).item() == pytest.approx(0.0, abs=1e-6)
    assert reference_prior(latent, reference, sigma=0.5).item() > 0


@pytest.mark.parametrize("arch", ["ifacenet", "unet-inpainter"])
def test_the_prior_pulls_the_latent_towards_the_references(arch):
    inpainter = tiny(arch)
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 4:28, 4:28] = 1                         # 56 % hidden: the prior weighs ~1.9
    references = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        reference_latents, _ = inpainter.encode(references, torch.zeros(3, 1, 32, 32))
        start, _ = inpainter.encode(image, mask)
    inversion = invert_with_references(inpainter, image, mask, references, replace(FAST, sigma=0.3))
    centre = reference_latents.mean(dim=0, keepdim=True)
    assert (inversion.latent - centre).norm() < (start - centre).norm()
    assert inversion.trace[-1]["prior"] < inversion.trace[0]["prior"]
    assert inversion.prior_weight > 1.8
    assert all(parameter.requires_grad for parameter in inpainter.parameters())    # its training flags restored


def test_known_pixels_are_the_inputs_at_any_size_with_every_term_on():
    inpainter = tiny("ifacenet")
    discriminator = create_model("patchgan", **tiny_arch_kwargs("patchgan")).eval()
    settings = replace(FAST, steps=3, discriminator_weight=0.1, perceptual_fallback="random", perceptual_layers=("relu1_1",))
    image, mask = torch.rand(2, 3, 45, 38), torch.zeros(2, 1, 45, 38)
    mask[0, :, 10:30, 5:25] = 1
    mask[1, :, 0:12, 20:38] = 1
    output = reference_guided_inpaint(inpainter, image, mask, torch.rand(2, 3, 50, 50), settings, resolution=32,
                                      discriminator=discriminator, extractor=perceptual_extractor(settings))
    known = (mask == 0).expand_as(image)
    assert output.shape == image.shape
    assert torch.equal(output[known], image[known])
    assert not torch.equal(output[~known], image[~known])


def test_every_invertible_inpainter_decodes_its_own_encoding_to_its_forward_pass():
    networks = {entry.name: tiny(entry.name) for entry in list_models("inpainter")}
    invertible = {name for name, net in networks.items() if hasattr(net, "encode") and hasattr(net, "decode")}
    assert {"ifacenet", "unet-inpainter", "mmrm-unet"} <= invertible
    one_per_class = {type(networks[name]): name for name in sorted(invertible)}   # variants share the split
    image, mask = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.7).float()
    smooth = create_model("mmrm-unet", width=4, depth=3, hole_fill="smooth")
    torch.nn.init.normal_(smooth.head.weight, std=0.1)                     # not the fill itself
    for net in [networks[name] for name in one_per_class.values()] + [smooth]:
        options = {"base": net.fill_base(image, mask)} if net is smooth else {}
        with torch.no_grad():
            torch.testing.assert_close(net.decode(*net.encode(image, mask), **options), net(image, mask), msg=repr(type(net)))


def test_inversion_decodes_a_smooth_fill_inpainter_through_its_fill():
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 6:20] = 1
    net = create_model("mmrm-unet", width=4, depth=3, hole_fill="smooth")
    torch.nn.init.normal_(net.head.weight, std=0.1)
    unmoved = invert_with_references(net, image, mask, torch.rand(2, 3, 32, 32), replace(FAST, steps=0))
    with torch.no_grad():
        expected = compose_known_pixels(net(image, mask), image, mask)
    torch.testing.assert_close(unmoved.output, expected)


def test_an_inpainter_without_the_split_is_refused_by_name():
    class Opaque(torch.nn.Module):
        def forward(self, image, mask):
            return image

    with pytest.raises(ReferenceGuidanceError, match="Opaque has no encode/decode split"):
        invert_with_references(Opaque(), torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32), torch.rand(1, 3, 32, 32), FAST)


def test_reference_settings_from_a_pyfunc_are_checked_like_params_yaml():
    assert reference_config({"steps": 5, "perceptual_layers": ["relu1_1"]}, "here").perceptual_layers == ("relu1_1",)
    with pytest.raises(ConfigError, match="here: reference.k must be > 0"):
        reference_config({"k": -1}, "here")
    with pytest.raises(ConfigError, match="unknown key.*'reference': shift; known: .*x0"):
        reference_config({"shift": 13}, "here")
