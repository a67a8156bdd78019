"""Registered models: the two networks, the end-to-end `deocclusion` pyfunc, and promotion by alias."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from PIL import Image
from torch import nn

import pipeline

logger = logging.getLogger(__name__)

SEGMENTER_MODEL = "occluder-segmenter"
INPAINTER_MODEL = "face-inpainter"
DEOCCLUSION_MODEL = "deocclusion"
CHAMPION, CHALLENGER = "champion", "challenger"
PACKAGE_DIR = Path(pipeline.__file__).parent
PIP_REQUIREMENTS = ["torch==2.13.0", "torchvision==0.28.0", "numpy", "pillow", "pandas", "lightning==2.6.6"]


def encode_png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(encoded: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return np.asarray(image.convert("RGB"))


class DeocclusionModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with column `image` (base64 PNG or JPEG, any size).
    Output: columns `mask` (base64 PNG, 255 = occluder) and `image` (base64 PNG, de-occluded, same size)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from pipeline.deocclusion import Deoccluder
        from pipeline.models.checkpoint import load_checkpoint

        segmenter, segmenter_settings = load_checkpoint(Path(context.artifacts["segmenter"]))
        inpainter, inpainter_settings = load_checkpoint(Path(context.artifacts["inpainter"]))
        self.deoccluder = Deoccluder(segmenter, inpainter, segmenter_settings.resolution, inpainter_settings.resolution,
                                     segmenter_settings.threshold, segmenter_settings.opening_kernel)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        masks, images = [], []
        for encoded in model_input["image"]:
            mask, image = self.deoccluder(decode_image(encoded))
            masks.append(encode_png(mask))
            images.append(encode_png(image))
        return pd.DataFrame({"mask": masks, "image": images})


def log_network(net: nn.Module, name: str) -> str:
    """Log a torch network to the active run; returns its model URI."""
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # its warning on pickle is the choice below
    # Pickled, not pt2: an exported graph would need fixed example shapes, and inputs vary in size.
    info = mlflow.pytorch.log_model(net, name=name, code_paths=[str(PACKAGE_DIR)], pip_requirements=PIP_REQUIREMENTS,
                                    serialization_format="pickle")
    return info.model_uri


def log_deocclusion_model(segmenter_checkpoint: Path, inpainter_checkpoint: Path, example_image: np.ndarray) -> str:
    """Log the end-to-end pyfunc, with signature and input example, to the active run; the two
    checkpoints carry their own settings (resolutions, threshold, clean-up)."""
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # its warning on pickling python_model is this choice
    example = pd.DataFrame({"image": [encode_png(example_image)]})
    model = DeocclusionModel()
    model.load_context(mlflow.pyfunc.PythonModelContext(
        artifacts={"segmenter": str(segmenter_checkpoint), "inpainter": str(inpainter_checkpoint)}, model_config={}))
    signature = infer_signature(example, model.predict(None, example))
    info = mlflow.pyfunc.log_model(
        name=DEOCCLUSION_MODEL, python_model=DeocclusionModel(),
        artifacts={"segmenter": str(segmenter_checkpoint), "inpainter": str(inpainter_checkpoint)},
        code_paths=[str(PACKAGE_DIR)], pip_requirements=PIP_REQUIREMENTS,
        signature=signature, input_example=example,
    )
    return info.model_uri


def register(model_uri: str, name: str, tags: dict[str, str], description: str = "") -> str:
    """Register model_uri as a new version of `name`, tagged; returns the version number."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):  # MLflow prints "Successfully registered ..." itself
        version = mlflow.register_model(model_uri, name, tags=tags)
    logger.debug(printed.getvalue().strip())
    if description:
        MlflowClient().update_model_version(name, version.version, description=description)
    return str(version.version)


@dataclass(frozen=True)
class PromotionDecision:
    alias: str
    version: str
    metric: str
    value: float
    previous_champion: str | None
    previous_value: float | None


def promote(name: str, version: str, metric: str, value: float, greater_is_better: bool) -> PromotionDecision:
    """Alias the version `champion` if it beats the current champion on `metric`, else `challenger`.

    The metric value is kept as a version tag, so the comparison needs no other run.
    """
    client = MlflowClient()
    client.set_model_version_tag(name, version, f"metric.{metric}", repr(value))
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    previous_value: float | None = None
    if champion is not None and champion.version != version:
        recorded = champion.tags.get(f"metric.{metric}")
        previous_value = float(recorded) if recorded is not None else None
    if previous_value is None or math.isnan(previous_value):
        wins = True
    else:
        wins = value > previous_value if greater_is_better else value < previous_value
    alias = CHAMPION if wins else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    logger.info("%s version %s -> %s (%s = %.4f, champion had %s)", name, version, alias, metric, value, previous_value)
    return PromotionDecision(alias, version, metric, value,
                             champion.version if champion is not None else None, previous_value)


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
