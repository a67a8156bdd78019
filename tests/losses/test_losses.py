import torch

from pipeline.losses.adversarial import discriminator_bce, generator_bce
from pipeline.losses.perceptual import VGG19Features, gram_matrix, perceptual_and_style
from pipeline.losses.reconstruction import hole_valid_l1, weighted_sum
from pipeline.losses.segmentation import bce_dice


def test_perceptual_and_style_vanish_for_identical_images_and_grow_with_noise():
    torch.manual_seed(0)
    extractor = VGG19Features(("relu1_1", "relu2_1"), weights="random")
    image = torch.rand(2, 3, 32, 32)
    same = perceptual_and_style(extractor, image, image)
    assert same["perceptual"].item() == 0 and same["style"].item() == 0
    noisy = perceptual_and_style(extractor, (image + 0.3 * torch.randn_like(image)).clamp(0, 1), image)
    assert noisy["perceptual"].item() > 0 and noisy["style"].item() > 0


def test_random_vgg19_fallback_is_fixed_by_its_seed():
    a, b = VGG19Features(("relu1_1",), "random", seed=3), VGG19Features(("relu1_1",), "random", seed=3)
    torch.testing.assert_close(a.features[0].weight, b.features[0].weight)
    assert not any(p.requires_grad for p in a.parameters())


def test_gram_matrix_is_normalised_by_element_count():
    features = torch.ones(1, 2, 3, 3)
    torch.testing.assert_close(gram_matrix(features), torch.full((1, 2, 2), 9 / 18))


def test_adversarial_bce_rewards_the_right_side():
    confident_real, confident_fake = torch.full((1, 1, 4, 4), 5.0), torch.full((1, 1, 4, 4), -5.0)
    assert discriminator_bce(confident_real, confident_fake) < discriminator_bce(confident_fake, confident_real)
    assert generator_bce(confident_real) < generator_bce(confident_fake)


def test_hole_and_valid_l1_are_weighed_apart():
    target = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    prediction = target + mask  # wrong only inside the hole
    terms = hole_valid_l1(prediction, target, mask)
    assert terms["hole_l1"].item() == 1.0 and terms["valid_l1"].item() == 0.0
    assert weighted_sum(terms, {"hole_l1": 6.0, "valid_l1": 1.0}).item() == 6.0


def test_three_class_segmentation_uses_one_hot_bce():
    labels = torch.tensor([[[0, 1], [2, 2]]])
    mask = (labels == 2).float()[:, None]
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 20 - 10
    assert bce_dice(perfect, mask, labels)["bce"].item() < 1e-3
    assert bce_dice(-perfect, mask, labels)["bce"].item() > 5


def test_pool_layers_give_paper_004s_perceptual_features():
    extractor = VGG19Features(("pool1", "pool2", "pool3"), weights="random")
    shapes = [tuple(a.shape) for a in extractor(torch.rand(1, 3, 64, 64))]
    assert shapes == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]
    assert isinstance(extractor.features[-1], torch.nn.MaxPool2d)


def test_hinge_losses_have_the_right_sign():
    from pipeline.losses.adversarial import discriminator_hinge, generator_hinge

    confident_real, confident_fake = torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 4, 4), -2.0)
    assert discriminator_hinge(confident_real, confident_fake) == 0        # both beyond the margin
    assert discriminator_hinge(confident_fake, confident_real) > 0
    assert generator_hinge(confident_real) < generator_hinge(confident_fake)  # -D(G(z)): fakes judged real win
