"""ONNX Runtime: the embedded default backend that runs everywhere."""
from .backend import OnnxRuntimeBackend
from .runner import OnnxRuntimeRunner

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner"]
