"""Inference in batches on the networks' device, results back on the input's."""

import numpy as np
import pytest
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


class ColourInpainter(torch.nn.Module):
    """Paints every pixel one skin colour."""

    def forward(self, image, mask):
        return torch.tensor([0.8, 0.5, 0.3]).view(1, 3, 1, 1).expand_as(image).clone()


class EverythingSegmenter(torch.nn.Module):
    """Calls every pixel an occluder."""

    def forward(self, image):
        return torch.full_like(image[:, :1], 10.0)


def test_a_black_and_white_photograph_comes_back_black_and_white_and_a_colour_one_in_colour():
    deoccluder = Deoccluder(EverythingSegmenter(), ColourInpainter(), 16, 16)
    grey = np.repeat(np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)[..., None], 3, axis=2)
    mask, output = deoccluder(grey)
    assert mask.min() == 255
    assert np.array_equal(output[..., 0], output[..., 1]) and np.array_equal(output[..., 1], output[..., 2])
    assert 0 < int(output[0, 0, 0]) < 255   # the fill's luma, not the input's pixels
    colour = grey.copy()
    colour[0, 0] = (200, 10, 10)
    _, output = deoccluder(colour)
    assert not np.array_equal(output[..., 0], output[..., 2])


class CountingInpainter(torch.nn.Module):
    """Paints the hole a different grey at each call and counts the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, image, mask):
        self.calls += 1
        return torch.full_like(image, 0.1 * self.calls)


def test_progressive_reconstruction_keeps_known_pixels_and_stops_within_its_limits():
    from pipeline.deocclusion import ProgressiveReconstruction, progressive_inpaint, progressive_steps

    image = torch.rand(3, 3, 64, 64)
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, :, 8:56, 8:56] = 1      # 56 % hidden: several steps
    mask[1, :, 30:34, 30:34] = 1    # 0.4 %: one prediction only
    mask[2] = 1                     # everything hidden: the dilation never frees a pixel, the step limit ends it
    settings = ProgressiveReconstruction(kernel=5, min_hole_ratio=0.2, max_steps=4)
    inpainter = CountingInpainter()
    output, steps = progressive_inpaint(inpainter, image, mask, settings)
    known = mask == 0
    assert torch.equal(output.expand_as(image)[known.expand_as(image)], image[known.expand_as(image)])
    assert steps.tolist()[1] == 1 and steps.tolist()[2] == 4 and 1 < steps.tolist()[0] <= 4
    # The outer ring keeps the first prediction, the centre the last: the hole was filled from the outside in.
    assert output[0, 0, 8, 8].item() == pytest.approx(0.1) and output[0, 0, 32, 32].item() > 0.1
    with pytest.raises(ValueError, match="dilation kernel must be odd"):
        ProgressiveReconstruction(kernel=4)
    # The evaluation counts the predictions from the masks alone, without running the inpainter.
    assert torch.equal(progressive_steps(mask, settings), steps)


def test_inpaint_with_progressive_reconstruction_matches_one_shot_on_a_small_hole():
    from pipeline.deocclusion import ProgressiveReconstruction, inpaint

    net = create_model("unet-inpainter", **tiny_arch_kwargs("unet-inpainter")).eval()
    image, mask = torch.rand(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    mask[:, :, 30:36, 30:36] = 1
    torch.testing.assert_close(inpaint(net, image, mask, progressive=ProgressiveReconstruction()), inpaint(net, image, mask))


def test_a_coloured_object_on_a_black_and_white_photograph_is_painted_over_in_grey():
    grey = torch.rand(1, 1, 16, 16).expand(1, 3, 16, 16).clone()
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., 4:10, 4:12] = 1
    occluded = grey.clone()
    occluded[:, 0, 4:10, 4:12], occluded[:, 1:, 4:10, 4:12] = 0.9, 0.1        # a red card
    output = inpaint(ColourInpainter(), occluded, masks)
    torch.testing.assert_close(output[:, 0], output[:, 2])
    torch.testing.assert_close(output * (1 - masks), grey * (1 - masks))
    coloured = inpaint(ColourInpainter(), torch.rand(1, 3, 16, 16), masks)
    assert not torch.allclose(coloured[:, 0] * masks[:, 0], coloured[:, 2] * masks[:, 0])


class LeftHalfSegmenter(torch.nn.Module):
    """Sure of an occluder on the image's left half, unsure (p = 0.6) on its right."""

    def forward(self, image):
        logits = torch.full_like(image[:, :1], 0.4055)
        logits[..., : image.shape[-1] // 2] = 10.0
        return logits


def test_test_time_flip_averages_the_probability_with_the_mirror_images():
    images = torch.rand(2, 3, 8, 8)
    plain = predict_masks(LeftHalfSegmenter(), images, 0.5)
    flipped = predict_masks(LeftHalfSegmenter(), images, 0.5, test_time_flip=True)
    assert plain.mean() == 1.0                                      # 1.0 left, 0.6 right: all above 0.5
    assert flipped.mean() == 1.0                                    # (1.0 + 0.6) / 2 = 0.8 on both halves
    strict = predict_masks(LeftHalfSegmenter(), images, 0.85, test_time_flip=True)
    assert strict.sum() == 0 and predict_masks(LeftHalfSegmenter(), images, 0.85)[..., :4].mean() == 1.0
    deoccluder = Deoccluder(LeftHalfSegmenter(), ColourInpainter(), 8, 8, threshold=0.85, test_time_flip=True)
    mask, _ = deoccluder(np.zeros((8, 8, 3), dtype=np.uint8))
    assert mask.max() == 0
    assert Deoccluder(LeftHalfSegmenter(), ColourInpainter(), 8, 8, threshold=0.85)(np.zeros((8, 8, 3), np.uint8))[0][:, :4].min() == 255


def test_test_time_flip_runs_the_segmenter_on_the_mirror_image_and_mirrors_its_answer_back():
    torch.manual_seed(0)
    segmenter = create_model("soclnet", **tiny_arch_kwargs("soclnet")).eval()
    images = torch.rand(2, 3, 32, 32)
    from pipeline.deocclusion import occluder_probability
    with torch.no_grad():
        plain = occluder_probability(segmenter, images)
        mirrored = occluder_probability(segmenter, images.flip(-1)).flip(-1)
        averaged = occluder_probability(segmenter, images, test_time_flip=True)
    assert not torch.allclose(plain, mirrored)                      # the network is not mirror-symmetric
    torch.testing.assert_close(averaged, (plain + mirrored) / 2)
    torch.testing.assert_close(predict_masks(segmenter, images, 0.5, test_time_flip=True), (averaged > 0.5).float())


def test_deoccluder_from_settings_cuts_masks_as_the_segmenters_checkpoint_says():
    from pipeline.models.checkpoint import NetworkSettings
    segmenter_settings = NetworkSettings("x", {}, "segmenter", 8, threshold=0.85, test_time_flip=True)
    inpainter_settings = NetworkSettings("y", {}, "inpainter", 16)
    deoccluder = Deoccluder.from_settings(LeftHalfSegmenter(), segmenter_settings, ColourInpainter(), inpainter_settings)
    assert (deoccluder.segmenter_resolution, deoccluder.inpainter_resolution) == (8, 16)
    assert (deoccluder.threshold, deoccluder.opening_kernel, deoccluder.test_time_flip) == (0.85, 0, True)
    assert deoccluder(np.zeros((8, 8, 3), dtype=np.uint8))[0].max() == 0     # 0.8 everywhere after the flip
    without_flip = Deoccluder.from_settings(LeftHalfSegmenter(), NetworkSettings("x", {}, "segmenter", 8,
                                                                                 threshold=0.85),
                                            ColourInpainter(), inpainter_settings)
    assert without_flip(np.zeros((8, 8, 3), dtype=np.uint8))[0][:, :4].min() == 255
