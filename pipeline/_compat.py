"""Imported before torchvision: lets the CUDA-linked torchvision wheel import beside the CPU torch.

torchvision registers its Python ops against `torchvision::nms` and `torchvision::qnms`; when its C
extension cannot load (it needs CUDA libraries the CPU torch lacks), those schemas are missing and
`import torchvision` fails. Defining the two schemas is enough for the models, transforms and
mlflow.pytorch we use, none of which calls nms. Where the extension loads (a CUDA machine), it is used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_library: torch.library.Library | None = None


def _load_extension() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    extension = next(Path(spec.submodule_search_locations[0]).glob("_C*.so"), None)
    try:
        torch.ops.load_library(str(extension)) if extension else None
    except (OSError, RuntimeError):
        return False
    return extension is not None


def ensure_torchvision_ops() -> None:
    global _library
    if _library is not None or _load_extension():
        return
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


ensure_torchvision_ops()
