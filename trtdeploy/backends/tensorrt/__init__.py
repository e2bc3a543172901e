"""TensorRT (8.6-11) and TensorRT-RTX, through one code path."""
from .backend import TensorRTBackend
from .compat import import_tensorrt

__all__ = ["TensorRTBackend", "import_tensorrt"]
