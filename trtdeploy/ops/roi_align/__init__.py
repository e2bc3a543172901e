"""RoIAlign (``mmdeploy::MMCVRoIAlign``, and MMDeploy's own ``mmcv::MMCVRoiAlign`` spelling), described once.

Parts: the torch-level function ``roi_align`` (``function.py``), the plugin-free lowering
(``lowering.py``), the TensorRT plugin (``plugin.py``) and the ONNX Runtime implementation (``ort.py``);
each is imported when first used. Fields are MMDeploy's.
"""
import dataclasses

from .. import CustomOp, Field, lazy_function, register_op

MAX_LEVELS = 5  # feature maps one RoIAlign call (and the kernel's single launch) takes

FIELDS = (
    Field("output_height", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("output_width", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("spatial_scale", "float", 1.0, lambda v: v > 0, "a number > 0 (1 / feature stride)"),
    Field("sampling_ratio", "int", 0),  # samples per bin side; <= 0: adaptive, as torchvision (every part takes it)
    Field("mode", "string", "avg", lambda v: v == "avg", "'avg' (max pooling has no torchvision equivalent here)"),
    Field("aligned", "int", 1, lambda v: v in (0, 1), "0 or 1"),
)

OP = register_op(CustomOp("mmdeploy", "MMCVRoIAlign", FIELDS, lowering=f"{__name__}.lowering:lower_roi_align",
                          plugin=f"{__name__}.plugin:RoIAlignPlugin", ort=f"{__name__}.ort:KERNEL"))
# The name and domain MMDeploy's own exporter writes: the same op, served by the plugin and the ONNX Runtime kernel.
MMCV_OP = register_op(dataclasses.replace(OP, domain="mmcv", op_type="MMCVRoiAlign", lowering=None))

__getattr__ = lazy_function(f"{__name__}.function", ("roi_align",))
__all__ = ["OP", "MMCV_OP", "FIELDS", "MAX_LEVELS", "roi_align"]
