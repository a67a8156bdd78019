"""Registered models: the two networks, the end-to-end `deocclusion` pyfunc, and promotion by alias."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import Schema, TensorSpec
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

import pipeline
from pipeline.registry.gate import CHAMPION

logger = logging.getLogger(__name__)

SEGMENTER_MODEL = "occluder-segmenter"
INPAINTER_MODEL = "face-inpainter"
DEOCCLUSION_MODEL = "deocclusion"
PACKAGE_DIR = Path(pipeline.__file__).parent
PIP_REQUIREMENTS = ["torch==2.13.0", "torchvision==0.28.0", "numpy", "pillow", "pandas", "lightning==2.6.6"]


def encode_png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(encoded: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return np.asarray(image.convert("RGB"))


# The pyfunc's params: `references`, base64 clean photographs of the person in every input image
# (reference-guided de-occlusion, pipeline/reference.py), and `reference_config`, a JSON object of
# params.yaml `reference:` keys over their defaults. Without references, plain de-occlusion.
REFERENCE_PARAMS = {"references": [""], "reference_config": "{}"}


class DeocclusionModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with column `image` (base64 PNG or JPEG, any size).
    Output: columns `mask` (base64 PNG, 255 = occluder) and `image` (base64 PNG, de-occluded, same size).
    Params (optional): `references` and `reference_config`, see REFERENCE_PARAMS."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from pipeline.deocclusion import Deoccluder
        from pipeline.models.checkpoint import load_checkpoint, load_discriminator

        segmenter, segmenter_settings = load_checkpoint(Path(context.artifacts["segmenter"]))
        inpainter, inpainter_settings = load_checkpoint(Path(context.artifacts["inpainter"]))
        self.deoccluder = Deoccluder.from_settings(segmenter, segmenter_settings, inpainter, inpainter_settings)
        # The inpainter's checkpoint carries its discriminator when it was trained adversarially:
        # paper 001's realism term uses it; without one the term is left out.
        self.discriminator = (load_discriminator(Path(context.artifacts["inpainter"]))
                              if inpainter_settings.adversarial else None)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        references = [encoded for encoded in (params or {}).get("references") or [] if encoded]
        if references:
            return self._predict_with_references(model_input, references, (params or {}).get("reference_config") or "{}")
        masks, images = [], []
        for encoded in model_input["image"]:
            mask, image = self.deoccluder(decode_image(encoded))
            masks.append(encode_png(mask))
            images.append(encode_png(image))
        return pd.DataFrame({"mask": masks, "image": images})

    def _predict_with_references(self, model_input: pd.DataFrame, references: list[str], settings_json: str) -> pd.DataFrame:
        import json

        from pipeline.config import reference_config
        from pipeline.reference import deocclude_with_references, perceptual_extractor

        try:
            settings = reference_config(json.loads(settings_json), "pyfunc param reference_config")
        except json.JSONDecodeError as error:
            raise ValueError(f"pyfunc param reference_config: not a JSON object ({error})") from None
        decoded = []
        for number, encoded in enumerate(references, start=1):
            try:
                decoded.append(decode_image(encoded))
            except Exception as error:  # PIL and base64 raise several types for a bad payload
                raise ValueError(f"pyfunc param references: reference {number} of {len(references)} is not a "
                                 f"base64 PNG or JPEG ({error})") from None
        extractor = perceptual_extractor(settings)
        masks, images = [], []
        for encoded in model_input["image"]:
            mask, image = deocclude_with_references(self.deoccluder, decode_image(encoded), decoded, settings,
                                                    self.discriminator if settings.discriminator_weight > 0 else None,
                                                    extractor)
            masks.append(encode_png(mask))
            images.append(encode_png(image))
        return pd.DataFrame({"mask": masks, "image": images})


def tensor_signature(inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]]) -> ModelSignature:
    """float32 tensors by name and shape, -1 where a size varies (batch, height, width)."""
    def schema(specs: dict[str, tuple[int, ...]]) -> Schema:
        return Schema([TensorSpec(np.dtype(np.float32), shape, name) for name, shape in specs.items()])

    return ModelSignature(inputs=schema(inputs), outputs=schema(outputs))


def bake_parametrizations(net: nn.Module) -> nn.Module:
    """`net` in eval mode with each parametrized weight (spectral norm in SA-UNet and the
    discriminators) replaced by the plain tensor it evaluates to: torch refuses to pickle
    parametrized modules, and in eval mode the two compute the same function."""
    net.eval()
    for module in list(net.modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return net


def log_network(net: nn.Module, name: str, signature: ModelSignature | None = None) -> str:
    """Log a torch network to the active run (its parametrizations baked in); returns its model URI."""
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # its warning on pickle is the choice below
    # Pickled, not pt2: an exported graph would need fixed example shapes, and inputs vary in size.
    info = mlflow.pytorch.log_model(bake_parametrizations(net), name=name, code_paths=[str(PACKAGE_DIR)], pip_requirements=PIP_REQUIREMENTS,
                                    serialization_format="pickle", signature=signature)
    return info.model_uri


def deocclusion_model_spec(segmenter_checkpoint: Path, inpainter_checkpoint: Path,
                           example_image: np.ndarray) -> dict[str, Any]:
    """The end-to-end pyfunc's arguments for mlflow.pyfunc.log_model / save_model: the model, the
    two checkpoints (which carry their own settings: resolutions, threshold, clean-up), the code,
    and the signature (with the reference params) and input example."""
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # its warning on pickling python_model is this choice
    example = pd.DataFrame({"image": [encode_png(example_image)]})
    artifacts = {"segmenter": str(segmenter_checkpoint), "inpainter": str(inpainter_checkpoint)}
    model = DeocclusionModel()
    model.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))
    signature = infer_signature(example, model.predict(None, example), params=REFERENCE_PARAMS)
    return {"python_model": DeocclusionModel(), "artifacts": artifacts, "code_paths": [str(PACKAGE_DIR)],
            "pip_requirements": PIP_REQUIREMENTS, "signature": signature, "input_example": example}


def log_deocclusion_model(segmenter_checkpoint: Path, inpainter_checkpoint: Path, example_image: np.ndarray) -> str:
    """Log the end-to-end pyfunc to the active run; returns its model URI."""
    spec = deocclusion_model_spec(segmenter_checkpoint, inpainter_checkpoint, example_image)
    return mlflow.pyfunc.log_model(name=DEOCCLUSION_MODEL, **spec).model_uri


def register(model_uri: str, name: str, tags: dict[str, str], description: str = "") -> str:
    """Register model_uri as a new version of `name`, tagged; returns the version number."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):  # MLflow prints "Successfully registered ..." itself
        version = mlflow.register_model(model_uri, name, tags=tags)
    logger.debug(printed.getvalue().strip())
    if description:
        MlflowClient().update_model_version(name, version.version, description=description)
    return str(version.version)


def set_version_tags(name: str, version: str, tags: dict[str, str], description: str | None = None) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if description is not None:
        client.update_model_version(name, version, description=description)


def delete_version_tag(name: str, version: str, key: str) -> None:
    """Remove tag `key` from a registered version; nothing to do when it has none."""
    client = MlflowClient()
    if key in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, key)


def version_record(name: str, version: str) -> Any:
    """The registry's ModelVersion (tags, run_id, description); LookupError naming a missing one."""
    try:
        return MlflowClient().get_model_version(name, version)
    except MlflowException:
        raise LookupError(f"models:/{name}/{version}: not found in the registry at {mlflow.get_tracking_uri()}") from None


def download_run_file(run_id: str, artifact_path: str, destination: Path) -> Path | None:
    """One artifact of a run into `destination`; None when the run has no such artifact."""
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(destination)))
    except (MlflowException, OSError):
        return None


def load_deoccluder(model_uri: str) -> Any:
    """The Deoccluder (both networks and their settings) inside a registered `deocclusion` pyfunc."""
    return load_deocclusion(model_uri).unwrap_python_model().deoccluder


def load_deocclusion(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a `deocclusion` pyfunc; a URI the registry cannot resolve is a LookupError naming it."""
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as error:
        raise LookupError(f"{model_uri}: cannot be loaded from {mlflow.get_tracking_uri()}: {error.message}") from None


def champion_version(name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
