"""RoIAlign (``mmdeploy::MMCVRoIAlign``): torch-level function, plugin-free lowering,
TensorRT plugin (``plugin.py``) and ONNX Runtime implementation (``ort.py``)."""
from .. import CustomOp, register_op
from .function import DOMAIN, OP_TYPE, roi_align
from .lowering import lower_roi_align
from .ort import KERNEL as ORT_KERNEL
from .plugin import PLUGIN

OP = register_op(CustomOp(DOMAIN, OP_TYPE, lower=lower_roi_align, plugin_name=PLUGIN.name,
                            plugin_version=PLUGIN.version, ort_impl=ORT_KERNEL.compute))

__all__ = ["roi_align", "OP"]
