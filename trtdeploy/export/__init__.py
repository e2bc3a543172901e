"""torch -> ONNX: model loading, rewriters active during export, the exporter itself."""
from .model_loader import load_model
from .onnx_exporter import export_onnx
from .rewriter import FUNCTION_REWRITER
from . import rewriters  # noqa: E402,F401  (registers the torchvision rewriters)

__all__ = ["FUNCTION_REWRITER", "export_onnx", "load_model"]
