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
