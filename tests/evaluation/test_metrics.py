import math

import pytest
import torch

from pipeline.evaluation.metrics import dice, inpainting_metrics, iou, l1_error, pixel_accuracy, psnr, ssim


def test_identical_images_score_perfectly():
    image = torch.rand(2, 3, 32, 32)
    assert torch.allclose(psnr(image, image), torch.full((2,), 100.0))
    assert torch.allclose(ssim(image, image), torch.ones(2), atol=1e-5)
    assert torch.equal(l1_error(image, image), torch.zeros(2))


def test_psnr_of_a_known_error():
    target = torch.zeros(1, 3, 8, 8)
    assert math.isclose(psnr(target + 0.1, target).item(), 20.0, rel_tol=1e-5)


def test_region_restricts_the_metric():
    target = torch.zeros(1, 3, 4, 4)
    prediction = target.clone()
    prediction[..., :2, :] = 1.0
    region = torch.zeros(1, 1, 4, 4)
    region[..., 2:, :] = 1
    assert l1_error(prediction, target, region).item() == 0.0
    assert l1_error(prediction, target, 1 - region).item() == 1.0
    assert l1_error(prediction, target).item() == 0.5


def test_ssim_drops_with_noise():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    assert ssim(image, (image + 0.2 * torch.randn_like(image)).clamp(0, 1)).item() < 0.9


def test_mask_overlap_metrics():
    predicted = torch.zeros(1, 1, 4, 4)
    true = torch.zeros(1, 1, 4, 4)
    predicted[..., :2, :] = 1      # 8 pixels
    true[..., 1:3, :] = 1          # 8 pixels, 4 shared
    assert math.isclose(iou(predicted, true).item(), 4 / 12, rel_tol=1e-6)
    assert math.isclose(dice(predicted, true).item(), 0.5)
    assert math.isclose(pixel_accuracy(predicted, true).item(), 8 / 16)
    empty = torch.zeros(1, 1, 4, 4)
    assert iou(empty, empty).item() == 1.0 and dice(empty, empty).item() == 1.0


def test_opening_removes_specks_and_keeps_blocks():
    from pipeline.deocclusion import opening

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 2, 2] = 1                 # a one-pixel speck
    mask[..., 10:25, 10:25] = 1         # a 15x15 occluder
    cleaned = opening(mask, 7)
    assert cleaned[..., 2, 2].item() == 0
    assert torch.equal(cleaned[..., 10:25, 10:25], mask[..., 10:25, 10:25])


def test_last_mask_ratio_bin_includes_its_upper_edge():
    from pipeline.stages.evaluate import METRICS, _bin_rows

    ratios = torch.tensor([0.05, 0.6])
    scores = {"m": {name: torch.tensor([1.0, 2.0]) for name in METRICS}}
    rows = _bin_rows(scores, ratios, (0.0, 0.3, 0.6))
    assert [row["samples"] for row in rows] == [1, 1]


def test_class_iou_pools_pixels_over_the_set():
    from pipeline.evaluation.metrics import class_confusion, class_iou

    true = torch.tensor([[[0, 1], [2, 2]]])
    predicted = torch.tensor([[[0, 1], [1, 2]]])
    iou_per_class = class_iou(class_confusion(predicted, true, 3))
    assert iou_per_class.tolist() == [1.0, 0.5, 0.5]


def test_ssim_of_two_flat_images_by_hand():
    # Flat images: means a and b, no variance or covariance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.25, 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert math.isclose(value.item(), expected, rel_tol=1e-4)


def test_masked_psnr_and_l1_by_hand():
    target = torch.zeros(1, 3, 4, 4)
    prediction = target.clone()
    prediction[..., 0, 0] = 0.5            # one pixel off by 0.5 in every channel
    region = torch.zeros(1, 1, 4, 4)
    region[..., 0, :2] = 1                 # two pixels, one of them wrong: MSE 0.125, L1 0.25
    assert math.isclose(psnr(prediction, target, region).item(), 10 * math.log10(1 / 0.125), rel_tol=1e-5)
    assert math.isclose(l1_error(prediction, target, region).item(), 0.25, rel_tol=1e-6)
    assert math.isclose(psnr(prediction, target).item(), 10 * math.log10(16 / 0.25), rel_tol=1e-5)
    assert psnr(prediction, target, torch.zeros(1, 1, 4, 4)).item() == 100.0   # nothing inside: nothing wrong


def test_mask_ssim_and_dice_of_a_shifted_mask():
    from pipeline.evaluation.metrics import mask_ssim

    true = torch.zeros(1, 1, 16, 16)
    true[..., :, :8] = 1                  # left half: 128 pixels
    assert mask_ssim(true, true).item() == pytest.approx(1.0, abs=1e-5)
    shifted = torch.zeros(1, 1, 16, 16)
    shifted[..., :, 4:12] = 1             # 128 pixels, 64 shared
    assert math.isclose(dice(shifted, true).item(), 2 * 64 / 256)
    assert math.isclose(iou(shifted, true).item(), 64 / 192, rel_tol=1e-6)
    assert mask_ssim(shifted, true).item() < 0.9


def test_pooled_class_scores_by_hand():
    from pipeline.evaluation.metrics import class_confusion, class_scores

    true = torch.tensor([[[0, 1], [2, 2]]])
    predicted = torch.tensor([[[0, 1], [1, 2]]])
    scores = class_scores(class_confusion(predicted, true, 3))
    assert scores["iou"].tolist() == [1.0, 0.5, 0.5]
    assert scores["dice"].tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert scores["pixel_accuracy"].item() == 0.75


class FaceOnTheLeftSegmenter(torch.nn.Module):
    """Three classes: background 0 everywhere, face 2 on the left half and 0 on the right, no occluder."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, image):
        logits = torch.zeros(image.shape[0], 3, *image.shape[-2:])
        logits[:, 1, :, : image.shape[-1] // 2] = 2.0
        logits[:, 2] = -10.0
        return logits


@pytest.mark.parametrize("flip", [False, True])
def test_face_labels_are_flip_averaged_as_the_occluder_mask_is(flip):
    from pipeline.models.checkpoint import NetworkSettings
    from pipeline.stages.evaluate import Models, _face_labels, _segment

    settings = NetworkSettings("x", {}, "segmenter", 8, test_time_flip=flip)
    segmenter = FaceOnTheLeftSegmenter()
    occluder, classes = _segment(Models(segmenter, segmenter, segmenter, settings, None), torch.rand(2, 3, 8, 8))
    assert occluder.max() < 0.01                                # the occluder channel: -10 everywhere
    labels = _face_labels(classes, (8, 8))
    assert labels[..., :4].eq(1).all()
    assert labels[..., 4:].eq(1 if flip else 0).all()          # averaged: face 0.69 against background 0.31


@pytest.mark.parametrize("flip", [False, True])
def test_evaluates_masks_from_one_segmenter_pass_are_predict_masks_own(flip):
    from pipeline.deocclusion import mask_from_probability, predict_masks
    from pipeline.models.checkpoint import NetworkSettings
    from pipeline.models.registry import create_model
    from pipeline.stages.evaluate import Models, _segment

    torch.manual_seed(0)
    segmenter = create_model("sa-unet", width=4, max_channels=16).eval()
    settings = NetworkSettings("sa-unet", {}, "segmenter", 64, test_time_flip=flip)
    images = torch.rand(3, 3, 80, 80)                           # resized to the segmenter's 64 px and back
    occluder, classes = _segment(Models(segmenter, segmenter, segmenter, settings, None), images)
    assert classes is None and occluder.shape == (3, 1, 64, 64)
    threshold = float(occluder.quantile(0.2))                   # an untrained network: most pixels masked, so that
                                                                # the openings leave some
    for kernel in (0, 3, 7):
        expected = predict_masks(segmenter, images, threshold, 64, kernel, test_time_flip=flip)
        assert 0 < expected.mean() < 1
        assert torch.equal(mask_from_probability(occluder, threshold, kernel, (80, 80)), expected)


def test_inpainting_metrics_are_the_single_metrics():
    generator = torch.Generator().manual_seed(3)
    clean = torch.rand(4, 3, 24, 24, generator=generator)
    output = (clean + 0.2 * torch.rand(4, 3, 24, 24, generator=generator)).clamp(0, 1)
    mask = (torch.rand(4, 1, 24, 24, generator=generator) > 0.6).float()
    scores = inpainting_metrics(output, clean, mask)
    expected = {"l1": l1_error(output, clean), "psnr": psnr(output, clean), "ssim": ssim(output, clean),
                "l1_masked": l1_error(output, clean, mask), "psnr_masked": psnr(output, clean, mask),
                "ssim_masked": ssim(output, clean, mask)}
    assert scores.keys() == expected.keys()
    for name, values in expected.items():
        assert torch.equal(scores[name], values), name
    assert not torch.equal(scores["ssim"], scores["ssim_masked"])
