"""torch -> ONNX: model loading, rewriters active during export, the exporter itself."""
from .families import DETECTOR_FAMILIES, DetectorFamily
from .model_loader import load_model
from .onnx_exporter import export_onnx
from .rewriter import FUNCTION_REWRITER
from . import rewriters  # noqa: E402,F401  (registers the rewriters and detector families)

__all__ = ["DETECTOR_FAMILIES", "DetectorFamily", "FUNCTION_REWRITER", "export_onnx", "load_model"]
