"""Inference in batches on the networks' device, results back on the input's."""

import numpy as np
import torch

from pipeline.deocclusion import Deoccluder, inpaint, network_device, predict_masks
from pipeline.models.registry import create_model
from tests.conftest import tiny_arch_kwargs


def test_batched_inference_matches_one_pass_and_returns_on_the_inputs_device():
    torch.manual_seed(0)
    segmenter = create_model("soclnet", **tiny_arch_kwargs("soclnet")).eval()
    inpainter = create_model("unet-inpainter", **tiny_arch_kwargs("unet-inpainter")).eval()
    images = torch.rand(5, 3, 48, 48)
    masks = predict_masks(segmenter, images, 0.5, resolution=32)
    torch.testing.assert_close(predict_masks(segmenter, images, 0.5, resolution=32, batch_size=2), masks)
    output = inpaint(inpainter, images, masks, resolution=32)
    torch.testing.assert_close(inpaint(inpainter, images, masks, resolution=32, batch_size=2), output)
    assert masks.shape == (5, 1, 48, 48) and output.shape == (5, 3, 48, 48)
    assert masks.device == output.device == images.device
    assert network_device(segmenter) == torch.device("cpu")


def test_the_deoccluder_moves_its_networks_and_takes_numpy_images():
    segmenter = create_model("soclnet", **tiny_arch_kwargs("soclnet")).eval()
    inpainter = create_model("unet-inpainter", **tiny_arch_kwargs("unet-inpainter")).eval()
    deoccluder = Deoccluder(segmenter, inpainter, 32, 32).to("cpu")
    mask, image = deoccluder(np.full((40, 30, 3), 128, dtype=np.uint8))
    assert mask.shape == (40, 30) and image.shape == (40, 30, 3) and image.dtype == np.uint8
