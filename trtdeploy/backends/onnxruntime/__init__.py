"""ONNX Runtime: the embedded default backend that runs everywhere."""
from .backend import OnnxRuntimeBackend, OnnxRuntimeRunner

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner"]
