import math

import torch

from pipeline.evaluation.metrics import dice, iou, l1_error, pixel_accuracy, psnr, ssim


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
