import subprocess

import pytest
import torch

from pipeline.models.registry import count_parameters, create_model, list_models
from tests.conftest import BIN, tiny_arch_kwargs


def forward(entry, net, image, mask):
    if entry.task == "inpainter":
        return net(image, mask)
    return net(image)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
@pytest.mark.parametrize("size", [64, 128])
def test_every_model_gives_the_expected_shape(entry, size):
    net = create_model(entry.name, **tiny_arch_kwargs(entry.name)).eval()
    image, mask = torch.rand(2, 3, size, size), (torch.rand(2, 1, size, size) > 0.7).float()
    output = forward(entry, net, image, mask)
    patches = {"patchgan": size // 8 - 2, "sn-patchgan": size // 16, "isnet-patchgan": size // 8}.get(entry.name)
    expected = {"segmenter": (2, getattr(net, "num_classes", 1), size, size), "inpainter": (2, 3, size, size),
                "discriminator": (2, 1, patches, patches)}[entry.task]
    assert output.shape == expected
    assert torch.isfinite(output).all()


def test_patchgan_gives_30x30_patches_at_256():
    assert create_model("patchgan")(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(entry):
    torch.manual_seed(0)
    net = create_model(entry.name, **tiny_arch_kwargs(entry.name)).train()
    image, mask = torch.rand(4, 3, 64, 64), (torch.rand(4, 1, 64, 64) > 0.6).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        output = forward(entry, net, image, mask)
        if entry.task == "inpainter":
            return (output - image).abs().mean()
        target = mask if entry.task == "segmenter" else torch.ones(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(output[:, -1:], target.expand_as(output[:, -1:]))

    first = loss().item()
    for _ in range(10):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < first


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError) as error:
        create_model("no-such-net")
    assert all(name in str(error.value) for name in ("soclnet", "sa-unet", "ifacenet", "unet-small"))


def test_task_mismatch_is_refused():
    with pytest.raises(KeyError, match="unknown segmenter architecture 'unet-inpainter'"):
        create_model("unet-inpainter", task="segmenter")


def test_models_cli_lists_every_architecture_with_its_parameter_count():
    result = subprocess.run([str(BIN / "deocclude"), "models"], capture_output=True, text=True, check=True)
    rows = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {entry.name for entry in list_models()}
    assert {"isnet", "isnet-no-final-fusion", "isnet-no-sub-pixel", "isnet-patchgan"} <= set(rows)   # paper 004
    assert rows["sa-unet"] == f"{count_parameters(create_model('sa-unet')):,}"
