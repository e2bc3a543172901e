"""Batched multi-class NMS (``mmdeploy::TRTBatchedNMS``): torch-level function, plugin-free lowering,
TensorRT plugin (``plugin.py``) and ONNX Runtime implementation (``ort.py``)."""
from .. import CustomOp, register_op
from .function import DOMAIN, OP_TYPE, multiclass_nms
from .lowering import lower_batched_nms
from .ort import KERNEL as ORT_KERNEL
from .plugin import PLUGIN

OP = register_op(CustomOp(DOMAIN, OP_TYPE, lower=lower_batched_nms, plugin_name=PLUGIN.name,
                            plugin_version=PLUGIN.version, ort_impl=ORT_KERNEL.compute))

__all__ = ["multiclass_nms", "OP"]
