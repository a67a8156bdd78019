from dataclasses import replace

import pytest
import torch

from pipeline.models.checkpoint import (CHECKPOINT_LAYOUT, CheckpointError, NetworkSettings, file_md5, load_checkpoint,
                                        load_discriminator, read_settings, save_checkpoint)
from pipeline.models.registry import count_parameters, create_model
from tests.conftest import tiny_arch_kwargs


def test_checkpoint_rebuilds_the_same_network_with_typed_settings(tmp_path):
    kwargs = tiny_arch_kwargs("sa-unet")
    net = create_model("sa-unet", **kwargs).eval()
    settings = NetworkSettings("sa-unet", kwargs, "segmenter", 64, threshold=0.4, opening_kernel=7,
                               test_time_flip=True)
    save_checkpoint(tmp_path / "seg.pt", net, settings)
    restored, loaded = load_checkpoint(tmp_path / "seg.pt")
    image = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(restored(image), net(image))
    assert loaded == settings and read_settings(tmp_path / "seg.pt") == settings
    assert count_parameters(restored) == count_parameters(net)
    assert not (tmp_path / "seg.pt.partial").exists()


def test_the_same_weights_and_settings_give_the_same_bytes(tmp_path):
    """Nothing run-specific in the file: DVC hashes a retrained, unchanged model as before, and the stages
    after it stay cached."""
    kwargs = tiny_arch_kwargs("sa-unet")
    torch.manual_seed(0)
    net = create_model("sa-unet", **kwargs)
    settings = NetworkSettings("sa-unet", kwargs, "segmenter", 64)
    first, second, changed = (tmp_path / run / "segmenter.pt" for run in ("first", "second", "changed"))
    save_checkpoint(first, net, settings)
    save_checkpoint(second, net, settings)
    assert file_md5(first) == file_md5(second)
    with torch.no_grad():
        next(net.parameters()).add_(1e-3)
    save_checkpoint(changed, net, settings)
    assert file_md5(changed) != file_md5(first)


def test_adversarial_inpainter_carries_its_discriminator(tmp_path):
    inpainter = create_model("unet-inpainter", **tiny_arch_kwargs("unet-inpainter"))
    discriminator = create_model("patchgan", **tiny_arch_kwargs("patchgan"))
    settings = NetworkSettings("unet-inpainter", tiny_arch_kwargs("unet-inpainter"), "inpainter", 32,
                               discriminator_arch="patchgan", discriminator_kwargs=tiny_arch_kwargs("patchgan"))
    save_checkpoint(tmp_path / "inp.pt", inpainter, settings, discriminator)
    assert read_settings(tmp_path / "inp.pt").adversarial
    restored = load_discriminator(tmp_path / "inp.pt")
    image = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(restored(image), discriminator.eval()(image))

    plain = replace(settings, discriminator_arch=None, discriminator_kwargs={})
    save_checkpoint(tmp_path / "plain.pt", inpainter, plain)
    with pytest.raises(CheckpointError, match="not trained adversarially"):
        load_discriminator(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no discriminator was given"):
        save_checkpoint(tmp_path / "bad.pt", inpainter, settings)


def test_older_layout_is_refused_with_a_clear_error(tmp_path):
    net = create_model("unet-small", **tiny_arch_kwargs("unet-small"))
    old = tmp_path / "segmenter.pt"
    torch.save({"arch": "unet-small", "arch_kwargs": {}, "task": "segmenter", "metadata": {"threshold": 0.5},
                "state_dict": net.state_dict()}, old)
    with pytest.raises(CheckpointError, match=rf"{old}: checkpoint layout 1 .* older deocclude: retrain"):
        load_checkpoint(old)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_saved_before_later_settings_existed_reads_them_as_their_defaults(tmp_path):
    """A file of this layout written before `test_time_flip` and `finetuned_on_segmenter` were settings."""
    kwargs = tiny_arch_kwargs("sa-unet")
    net = create_model("sa-unet", **kwargs).eval()
    earlier = {"arch": "sa-unet", "arch_kwargs": kwargs, "task": "segmenter", "resolution": 64,
               "training_run_id": "run-0", "threshold": 0.6, "opening_kernel": 3,
               "discriminator_arch": None, "discriminator_kwargs": {}}
    torch.save({"layout": CHECKPOINT_LAYOUT, "settings": earlier, "state_dict": net.state_dict()}, tmp_path / "seg.pt")
    restored, settings = load_checkpoint(tmp_path / "seg.pt")
    assert (settings.threshold, settings.opening_kernel, settings.test_time_flip) == (0.6, 3, False)
    assert settings.finetuned_on_segmenter is None
    assert not hasattr(settings, "training_run_id")   # retired: the run's checkpoint_md5 tag says it now
    image = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(restored(image), net(image))
