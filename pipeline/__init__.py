"""deocclude: occluder segmentation and face inpainting, built, tracked and promoted reproducibly."""

from pipeline import _compat  # noqa: F401  (must precede any torchvision import)

__version__ = "0.1.0"
