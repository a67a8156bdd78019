"""`deocclude predict --reference`: the deocclusion pyfunc with its `references` param, on tiny checkpoints."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cli import EXIT_BAD_INPUT, main
from pipeline.data.dataset import image_to_tensor
from pipeline.deocclusion import resize
from pipeline.losses.segmentation import occluder_logits
from pipeline.models.checkpoint import NetworkSettings, save_checkpoint
from pipeline.models.registry import create_model
from pipeline.registry.mlflow_models import deocclusion_model_spec
from tests.conftest import tiny_arch_kwargs, tiny_params, write_params


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            for name, size in (("face.png", (40, 36)), ("r1.png", (32, 32)), ("r2.png", (50, 50)))}


def median_probability(segmenter: torch.nn.Module, image: np.ndarray) -> float:
    """The untrained segmenter's occluder probability, as predict_masks resizes it, at its median: a
    threshold there masks about half of the face image, so the test sees known and hidden pixels."""
    original = image_to_tensor(image)[None]
    with torch.no_grad():
        probability = torch.sigmoid(occluder_logits(segmenter.eval()(resize(original, (32, 32)))))
    return resize(probability, tuple(original.shape[-2:])).median().item()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A deocclusion pyfunc saved to a folder (no registry): tiny SOCLNET and an adversarial IFACENET."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    segmenter = create_model("soclnet", **tiny_arch_kwargs("soclnet"))
    inpainter = create_model("ifacenet", **tiny_arch_kwargs("ifacenet"))
    discriminator = create_model("patchgan", **tiny_arch_kwargs("patchgan"))
    threshold = median_probability(segmenter, images()["face.png"])
    save_checkpoint(root / "segmenter.pt", segmenter,
                    NetworkSettings("soclnet", tiny_arch_kwargs("soclnet"), "segmenter", 32, threshold=threshold))
    save_checkpoint(root / "inpainter.pt", inpainter,
                    NetworkSettings("ifacenet", tiny_arch_kwargs("ifacenet"), "inpainter", 32,
                                    discriminator_arch="patchgan", discriminator_kwargs=tiny_arch_kwargs("patchgan")),
                    discriminator)
    spec = deocclusion_model_spec(root / "segmenter.pt", root / "inpainter.pt", np.full((32, 32, 3), 128, np.uint8))
    spec.pop("code_paths")                  # the test process imports this checkout's pipeline already
    mlflow.pyfunc.save_model(str(root / "deocclusion"), **spec)
    return root / "deocclusion"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    # A file store: predict only reads a model from a folder, and sqlite's migrations would cost seconds.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    params = tiny_params({"reference": {"steps": 3, "perceptual_fallback": "none"}})
    write_params(tmp_path, params)
    for name, image in images().items():
        Image.fromarray(image).save(tmp_path / name)
    return tmp_path


def predict(project: Path, model: Path, *args: str) -> int:
    return main(["--params", str(project / "params.yaml"), "predict", str(project / "face.png"),
                 "-o", str(project / "out.png"), "--mask-out", str(project / "mask.png"), "--model", str(model), *args])


def test_predict_with_references_keeps_the_known_pixels(project, saved_model):
    assert predict(project, saved_model, "--reference", str(project / "r1.png"), "--reference", str(project / "r2.png")) == 0
    source = np.asarray(Image.open(project / "face.png"))
    output, mask = np.asarray(Image.open(project / "out.png")), np.asarray(Image.open(project / "mask.png"))
    assert output.shape == source.shape and mask.shape == source.shape[:2]
    assert 0.2 < (mask > 0).mean() < 0.8                                 # known and hidden pixels both
    assert not np.array_equal(output[mask > 0], source[mask > 0])        # the hidden ones painted
    np.testing.assert_array_equal(output[mask == 0], source[mask == 0])


@pytest.mark.parametrize("problem", ["missing", "not an image"])
def test_a_bad_reference_exits_2_naming_the_file(project, saved_model, capsys, problem):
    bad = project / "bad.png"
    if problem == "not an image":
        bad.write_text("not a picture")
    assert predict(project, saved_model, "--reference", str(project / "r1.png"), "--reference", str(bad)) == EXIT_BAD_INPUT
    assert f"{bad}:" in capsys.readouterr().err
    assert not (project / "out.png").exists()


def test_bad_reference_settings_in_params_yaml_are_named(project, saved_model, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["reference"]["sigma"] = 0
    write_params(project, params)
    assert predict(project, saved_model, "--reference", str(project / "r1.png")) != 0
    assert "reference.sigma must be > 0" in capsys.readouterr().err
