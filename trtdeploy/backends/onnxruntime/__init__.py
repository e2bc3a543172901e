"""ONNX Runtime: the embedded default backend that runs everywhere."""
from . import qdq_scheme  # noqa: F401  (registers its Q/DQ scheme in passes.quantize.SCHEMES)
from .backend import OnnxRuntimeBackend
from .runner import OnnxRuntimeRunner

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner"]
