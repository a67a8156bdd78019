"""The papers' models are the papers' models: attention, spectral norm, structure and ablations."""

import pytest
import torch
from torch import nn

from pipeline.losses.perceptual import VGG19Features
from pipeline.models.ifacenet import IFaceNet, PatchDiscriminator, Shallower, TraResNet
from pipeline.models.layers import BatchInstanceNorm2d, DepthwiseSeparableConv2d, SelfAttention2d
from pipeline.models.pretrained import PretrainedWeightsMissing, weight_file
from pipeline.models.registry import count_parameters, create_model
from pipeline.models.sa_unet import SelfAttentionUNet
from pipeline.models.soclnet import SOCLNet
from tests.conftest import tiny_arch_kwargs


def spectral_normed(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def test_soclnet_is_torchvision_deeplabv3_resnet50_with_sigmoid_attention_after_aspp():
    from torchvision.models.resnet import Bottleneck
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

    net = create_model("soclnet")
    assert isinstance(net.deeplab, DeepLabV3) and isinstance(net.deeplab.classifier[0], ASPP)
    assert isinstance(net.attention, SelfAttention2d) and net.attention.activation == "sigmoid"
    assert isinstance(net.attention.attention_scale, nn.Parameter) and net.attention.attention_scale.requires_grad
    backbone = net.deeplab.backbone
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert isinstance(backbone.layer1[0], Bottleneck) and net.num_classes == 3


def test_attention_follows_eq1():
    torch.manual_seed(0)
    block = SelfAttention2d(8, activation="sigmoid")
    features = torch.rand(1, 8, 3, 3)
    torch.testing.assert_close(block(features), features)  # lambda starts at 0
    with torch.no_grad():
        block.attention_scale.fill_(0.5)
    q = block.query(features).flatten(2).transpose(1, 2)
    k = block.key(features).flatten(2)
    v = block.value(features).flatten(2)
    expected = 0.5 * torch.bmm(v, torch.sigmoid(torch.bmm(q, k)).transpose(1, 2)).view(1, 8, 3, 3) + features
    torch.testing.assert_close(block(features), expected)


def test_sa_unet_matches_paper_003():
    net = SelfAttentionUNet()
    assert len(net.encoders) == 5 and len(net.bottleneck) == 2 and len(net.decoders) == 5
    attention_blocks = [i for i, e in enumerate(net.encoders) if any(isinstance(m, SelfAttention2d) for m in e.modules())]
    assert attention_blocks == [3, 4]  # EN4 and EN5
    assert all(isinstance(e.first[0], SelfAttention2d) for e in net.encoders[3:])
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m is not net.head
             and not any(m is getattr(a, n) for a in net.modules() if isinstance(a, SelfAttention2d)
                         for n in ("query", "key", "value"))]
    assert convs and all(spectral_normed(m) for m in convs)
    assert sum(isinstance(m, BatchInstanceNorm2d) for m in net.modules()) == 3 * 2 + 2 * 1 + 2 + 5 * 2  # EN1-3, EN4-5 (attention first), BN, DEC
    assert abs(count_parameters(net) - 17_657_825) / 17_657_825 < 0.01


def test_sa_unet_predicts_the_occluder_alone_or_three_classes_with_the_occluder_last():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 64, 64)
    assert SelfAttentionUNet(width=4, max_channels=16)(image).shape == (2, 1, 64, 64)
    assert SelfAttentionUNet(width=4, max_channels=16, classes=3)(image).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="classes must be 1 .* or 3"):
        SelfAttentionUNet(width=4, classes=2)


def test_batch_instance_norm_mixes_batch_and_instance_statistics():
    norm = BatchInstanceNorm2d(4).train()
    x = torch.randn(3, 4, 5, 5) * 3 + 1
    with torch.no_grad():
        norm.rho.fill_(0.0)
    torch.testing.assert_close(norm(x), torch.nn.functional.instance_norm(x))
    with torch.no_grad():
        norm.rho.fill_(1.0)
    torch.testing.assert_close(norm(x), torch.nn.functional.batch_norm(x, None, None, training=True))


def test_ifacenet_structure_and_ablations():
    net = IFaceNet(**tiny_arch_kwargs("ifacenet"))
    assert isinstance(net.traresnet, TraResNet) and isinstance(net.shallower, Shallower)
    assert sum(isinstance(m, DepthwiseSeparableConv2d) for m in net.shallower.modules()) == 4
    assert isinstance(net.fusion, SelfAttention2d) and net.fusion.activation == "sigmoid"
    assert [b[0].depthwise.dilation[0] for b in net.context.branches] == [1, 2, 4]
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in net.traresnet.upsample) == 2
    assert create_model("ifacenet-no-traresnet", **tiny_arch_kwargs("ifacenet")).traresnet is None
    assert create_model("ifacenet-no-shallower", **tiny_arch_kwargs("ifacenet")).shallower is None
    assert isinstance(create_model("ifacenet-no-attention", **tiny_arch_kwargs("ifacenet")).fusion, nn.Identity)


def test_patchgan_has_five_convolutions_and_optional_spectral_norm():
    plain = PatchDiscriminator()
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 5
    normed = PatchDiscriminator(use_spectral_norm=True)
    assert all(spectral_normed(m) for m in normed.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty local torch cache: TORCH_HOME is where the weight files are looked for."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_pretrained_weights_missing_is_a_clear_error(torch_home):
    for build, name in ((lambda: SOCLNet(pretrained=True), "resnet50-0676ba61.pth"),
                        (lambda: VGG19Features(weights="imagenet"), "vgg19-dcbb9e9d.pth")):
        with pytest.raises(PretrainedWeightsMissing) as error:
            build()
        assert str(torch_home / "hub" / "checkpoints" / name) in str(error.value)
        assert "pretrained: false" in str(error.value)


def test_pretrained_weights_present_are_loaded_and_early_stages_frozen(torch_home):
    from torchvision.models import resnet50

    weights = resnet50().state_dict()
    weight_file("resnet50").parent.mkdir(parents=True)
    torch.save(weights, weight_file("resnet50"))
    assert weight_file("resnet50").is_relative_to(torch_home)
    trunk = TraResNet(pretrained=True)
    torch.testing.assert_close(trunk.stem[0].weight, weights["conv1.weight"])
    assert not any(p.requires_grad for p in trunk.stem.parameters())
    assert all(p.requires_grad for p in trunk.stages.parameters())


def test_checkpoint_arguments_keep_a_pretrained_stem_frozen(torch_home):
    from torchvision.models import resnet50

    from pipeline.stages.training import checkpoint_kwargs

    weight_file("resnet50").parent.mkdir(parents=True)
    torch.save(resnet50().state_dict(), weight_file("resnet50"))
    kwargs = {**tiny_arch_kwargs("ifacenet"), "resnet_layers": [3, 4, 6, 3], "resnet_width_per_group": 64, "pretrained": True}
    rebuilt_kwargs = checkpoint_kwargs(create_model("ifacenet", **kwargs), kwargs)
    assert rebuilt_kwargs["pretrained"] is False and rebuilt_kwargs["freeze_stem"] is True
    weight_file("resnet50").unlink()  # the rebuild must not need the ImageNet file
    rebuilt = create_model("ifacenet", **rebuilt_kwargs)
    assert not any(p.requires_grad for p in rebuilt.traresnet.stem.parameters())


def test_mmrm_unet_matches_paper_002():
    from pipeline.models.mmrm_unet import ChannelAttention, MixedAttentionResidual, SpatialAttention, UpModule

    net = create_model("mmrm-unet", width=8, depth=3)
    modules = [m for m in net.modules() if isinstance(m, MixedAttentionResidual)]
    assert len(modules) == 1 + 3 + 3                       # stem, down-sampling, up-sampling
    for module in modules:
        kernels = [branch[0][0].kernel_size for branch in module.branches]
        assert kernels == [(1, 1), (3, 3), (5, 5)]
        assert [isinstance(branch[1], SpatialAttention) for branch in module.branches] == [False, True, True]
        assert isinstance(module.channel_attention, ChannelAttention)
    assert [m.block.fuse[0].in_channels > 0 and isinstance(m.channel_attention, ChannelAttention)
            for m in net.modules() if isinstance(m, UpModule)] == [True] * 3
    # Residual: with every branch zeroed, the module passes its (shortcut) input through the activation.
    module = MixedAttentionResidual(4, 4).eval()
    for branch in module.branches:
        torch.nn.init.zeros_(branch[0][0].weight)
    torch.nn.init.zeros_(module.fuse[0].weight)
    x = torch.rand(1, 4, 8, 8)
    torch.testing.assert_close(module(x), x)


def test_mmrm_unet_ablations_drop_what_they_name():
    from pipeline.models.mmrm_unet import ChannelAttention, MixedAttentionResidual, SpatialAttention, UpModule

    def count(name, kind):
        return sum(isinstance(m, kind) for m in create_model(name, width=8, depth=3).modules())

    full = {kind: count("mmrm-unet", kind) for kind in (SpatialAttention, ChannelAttention, MixedAttentionResidual)}
    assert count("mmrm-unet-no-spatial-attention", SpatialAttention) == 0
    assert count("mmrm-unet-no-channel-attention", ChannelAttention) == 3      # the up-sampling path keeps its own
    assert count("mmrm-unet-no-up-channel-attention", ChannelAttention) == full[ChannelAttention] - 3
    assert count("mmrm-unet-no-mmrm", MixedAttentionResidual) == 0
    assert sum(isinstance(m, UpModule) for m in create_model("mmrm-unet-no-mmrm", width=8, depth=3).modules()) == 3


def test_sn_patchgan_has_four_spectral_norm_3x3_stride_2_convolutions():
    net = create_model("sn-patchgan")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((3, 3), (2, 2))] * 4
    assert all(hasattr(c, "parametrizations") and "weight" in c.parametrizations for c in convs)
    assert net(torch.rand(1, 3, 128, 128)).shape == (1, 1, 8, 8)


def test_total_variation_follows_eq3():
    from pipeline.losses.reconstruction import total_variation

    image = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])       # one pixel with both neighbours: dx = -1, dy = 0
    torch.testing.assert_close(total_variation(image, eps=0.0), torch.tensor(1.0))
    assert total_variation(torch.full((1, 3, 8, 8), 0.5), eps=0.0) == 0


def test_smooth_fill_interpolates_the_known_pixels_harmonically():
    from pipeline.models.mmrm_unet import smooth_fill

    columns = torch.linspace(0, 1, 64).expand(1, 3, 64, 64)        # a ramp is harmonic: the fill must rebuild it
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 20:44] = 1
    filled = smooth_fill(columns, mask)
    known = (mask == 0).expand_as(columns)
    assert torch.equal(filled[known], columns[known])
    assert (filled - columns).abs().max() < 0.02
    almost_hidden = mask * 0.999                                     # a soft mask: > 0 is hidden
    assert (smooth_fill(columns, almost_hidden) - columns).abs().max() < 0.02
    assert torch.equal(smooth_fill(columns, torch.ones(1, 1, 64, 64)), torch.full_like(columns, 0.5))


def test_the_biharmonic_fill_bends_where_the_harmonic_fill_goes_straight():
    from pipeline.models.mmrm_unet import smooth_fill

    x = torch.linspace(-1, 1, 64)
    bowl = (x ** 2).expand(1, 3, 64, 64).contiguous()             # x^2 is biharmonic, not harmonic
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 20:44] = 1
    hidden = mask.expand_as(bowl) > 0
    harmonic_error = (smooth_fill(bowl, mask) - bowl)[hidden].abs().mean()
    biharmonic = smooth_fill(bowl, mask, equation="biharmonic")
    biharmonic_error = (biharmonic - bowl)[hidden].abs().mean()
    assert torch.equal(biharmonic[~hidden], bowl[~hidden])
    assert biharmonic_error < harmonic_error / 2, (biharmonic_error, harmonic_error)
    assert torch.equal(smooth_fill(bowl, torch.ones(1, 1, 64, 64), equation="biharmonic"), torch.full_like(bowl, 0.5))
    with pytest.raises(ValueError, match="equation must be"):
        smooth_fill(bowl, mask, equation="triharmonic")


@pytest.mark.parametrize("hole_fill, equation", [("smooth", "harmonic"), ("biharmonic", "biharmonic")])
def test_mmrm_unet_smooth_hole_fill_starts_at_the_fill_and_sees_the_mask(hole_fill, equation):
    from pipeline.models.mmrm_unet import smooth_fill

    image, mask = torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 10:26] = 1
    fill = smooth_fill(image, mask, equation=equation).clamp(1e-3, 1 - 1e-3)   # a biharmonic fill overshoots
    net = create_model("mmrm-unet", width=4, depth=3, hole_fill=hole_fill)
    assert net.stem.branches[0][0][0].in_channels == 4                 # RGB of the fill + the mask
    with torch.no_grad():
        torch.testing.assert_close(net(image, mask), fill, atol=2e-3, rtol=0)
        torch.nn.init.normal_(net.head.weight, std=0.1)              # a trained head corrects the fill
        corrected = net(image, mask)
        assert corrected.sub(fill).abs().max() > 0.05
        assert corrected.min() >= 0 and corrected.max() <= 1
    with pytest.raises(ValueError, match="hole_fill must be"):
        create_model("mmrm-unet", width=4, depth=3, hole_fill="grey")
