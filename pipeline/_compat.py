"""Imported before torchvision: lets the CUDA-linked torchvision wheel import beside the CPU torch.

torchvision registers its Python ops against `torchvision::nms` and `torchvision::qnms`; when its C
extension cannot load, those schemas are missing and `import torchvision` fails. Defining the two
schemas is enough for the models, transforms and mlflow.pytorch we use (none of which calls nms).
"""

from __future__ import annotations

import torch

_library: torch.library.Library | None = None


def ensure_torchvision_ops() -> None:
    global _library
    if _library is not None:
        return
    try:
        import importlib.util

        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.submodule_search_locations is None:
            return
        from pathlib import Path

        extension = next(Path(spec.submodule_search_locations[0]).glob("_C*.so"), None)
        if extension is not None:
            torch.ops.load_library(str(extension))
            return
    except (OSError, RuntimeError):
        pass
    if hasattr(torch.ops.torchvision, "nms"):
        return
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


ensure_torchvision_ops()
