import pytest
import torch

from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.registry import count_parameters, create_model, list_models

SMALL = {"width": 4, "depth": 2}


def forward(entry, net, size):
    image = torch.rand(2, 3, size, size)
    if entry.task == "segmenter":
        return net(image)
    return net(image, (torch.rand(2, 1, size, size) > 0.7).float())


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
@pytest.mark.parametrize("size", [32, 64])
def test_every_model_keeps_the_input_size(entry, size):
    net = create_model(entry.name, **SMALL)
    output = forward(entry, net, size)
    assert output.shape == (2, 1 if entry.task == "segmenter" else 3, size, size)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(entry):
    torch.manual_seed(0)
    net = create_model(entry.name, **SMALL)
    image, mask = torch.rand(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.6).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        if entry.task == "segmenter":
            return torch.nn.functional.binary_cross_entropy_with_logits(net(image), mask)
        return (net(image, mask) - image).abs().mean()

    first = loss().item()
    for _ in range(8):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < first


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError) as error:
        create_model("no-such-net")
    assert "unet-small" in str(error.value) and "unet-inpainter" in str(error.value)


def test_task_mismatch_is_refused():
    with pytest.raises(KeyError, match="unknown segmenter architecture 'unet-inpainter'"):
        create_model("unet-inpainter", task="segmenter")


def test_checkpoint_rebuilds_the_same_network(tmp_path):
    net = create_model("unet-small", **SMALL).eval()
    save_checkpoint(tmp_path / "seg.pt", net, "unet-small", SMALL, "segmenter", threshold=0.5)
    restored, meta = load_checkpoint(tmp_path / "seg.pt")
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(restored(image), net(image))
    assert meta["metadata"]["threshold"] == 0.5 and count_parameters(restored) == count_parameters(net)
    assert not (tmp_path / "seg.pt.partial").exists()
