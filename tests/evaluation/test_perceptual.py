"""LPIPS and FID load ImageNet weights from the local torch cache only; missing, they are unavailable
with the reason. An untrained AlexNet saved where torchvision keeps the real one stands in for it."""

import pytest
import torch

from pipeline.evaluation.perceptual import LpipsScorer, Unavailable, cached_checkpoint, load_fid, load_lpips


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_missing_weights_are_unavailable_with_the_file_named(empty_torch_cache):
    lpips, fid = load_lpips("alex"), load_fid()
    assert isinstance(lpips, Unavailable) and "alexnet-owt-7be5be79.pth is missing" in lpips.reason
    assert isinstance(fid, Unavailable) and str(empty_torch_cache) in fid.reason
    assert lpips.record() == {"available": False, "reason": lpips.reason}
    assert not any(empty_torch_cache.rglob("*.pth"))          # nothing was downloaded


def test_lpips_from_cached_weights_whole_image_and_inside_a_region(empty_torch_cache):
    import torchvision.models

    weights = cached_checkpoint(torchvision.models.AlexNet_Weights.DEFAULT.url)
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    scorer = load_lpips("alex")
    assert isinstance(scorer, LpipsScorer)

    torch.manual_seed(1)
    clean = torch.rand(2, 3, 64, 64)
    assert torch.allclose(scorer(clean, clean), torch.zeros(2), atol=1e-6)
    changed = clean.clone()
    changed[..., 40:, 40:] = 1 - changed[..., 40:, 40:]       # only the bottom-right corner differs
    region = torch.zeros(2, 1, 64, 64)
    region[..., 40:, 40:] = 1
    whole, inside = scorer(changed, clean), scorer(changed, clean, region)
    assert whole.shape == inside.shape == (2,)
    assert (whole > 0).all() and (inside > whole).all()       # the local score concentrates on the change


def test_fid_from_cached_inception_weights(empty_torch_cache, monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    from pipeline.evaluation.perceptual import FidScorer

    with monkeypatch.context() as patch:           # an untrained Inception V3, saved where the real one would be
        patch.setattr(inception.torch, "load", lambda *args, **kwargs: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        state = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], "unused").state_dict()
    weights = cached_checkpoint(inception.URL_INCEPTION_V3)
    weights.parent.mkdir(parents=True)
    torch.save(state, weights)
    scorer = load_fid()
    assert isinstance(scorer, FidScorer)

    torch.manual_seed(1)
    real = torch.rand(2, 3, 32, 32)
    assert scorer(real[:1], real) is None                       # no covariance from one image
    value = scorer(torch.zeros_like(real), real)                # an untrained network: a number, not a meaning
    assert isinstance(value, float) and value == value
