import torch
from torch import nn

from pipeline.evaluation.gradcam import classifier_layer, grad_cam, overlay
from pipeline.models.registry import create_model
from tests.conftest import TINY_ARCH_KWARGS


class LeftRightSegmenter(nn.Module):
    """Class 1 is driven by one feature that is on only in the image's left half."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        self.classifier = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, 0] = 1.0          # feature 0 = red channel
            self.features.bias[1] = 0.1               # feature 1 = constant
            self.classifier.weight.zero_()
            self.classifier.bias.zero_()
            self.classifier.weight[1, 0] = 1.0        # class 1 <- red
            self.classifier.weight[0, 1] = 1.0        # class 0 <- constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_the_map_of_a_class_lights_up_where_its_evidence_is():
    image = torch.zeros(1, 3, 8, 8)
    image[:, 0, :, :4] = 1.0                          # red on the left
    maps = grad_cam(LeftRightSegmenter(), image)
    assert maps.shape == (1, 2, 8, 8)
    assert maps[0, 1, :, :4].min() == 1.0 and maps[0, 1, :, 4:].max() == 0.0


def test_every_segmenter_gives_one_map_per_class_in_range():
    for arch, classes in (("soclnet", 3), ("sa-unet", 1), ("sa-unet", 3)):
        kwargs = {**TINY_ARCH_KWARGS[arch], **({"classes": 3} if arch == "sa-unet" and classes == 3 else {})}
        net = create_model(arch, "segmenter", **kwargs)
        assert isinstance(classifier_layer(net), nn.Conv2d)
        maps = grad_cam(net, torch.rand(2, 3, 64, 64))
        assert maps.shape == (2, classes, 64, 64) and maps.min() >= 0 and maps.max() <= 1
        assert overlay(torch.rand(3, 64, 64), maps[0, 0], scale=2).shape == (128, 128, 3)
