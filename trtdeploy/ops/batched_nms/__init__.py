"""Batched multi-class NMS (``mmdeploy::TRTBatchedNMS``), described once: MMDeploy's node and its fields.

Parts: the torch-level function ``multiclass_nms`` (``function.py``, its symbolic writes the node),
the plugin-free lowering (``lowering.py``), the TensorRT plugin (``plugin.py``) and the ONNX Runtime
implementation (``ort.py``); each is imported when first used.
"""
from .. import CustomOp, Field, lazy_function, register_op

FIELDS = (
    Field("background_label_id", "int", -1, lambda v: v >= -1, "-1 (no background class) or a class index"),
    Field("num_classes", "int", -1, lambda v: v >= 1 or v == -1,
          "an integer >= 1 (scores.shape[2]), or -1: read from the scores (the plugin needs it given)"),
    Field("topk", "int", valid=lambda v: v >= -1 and v != 0,
          expected="an integer >= 1 (candidates per image, over all classes), or -1 for all"),
    Field("keep_topk", "int", valid=lambda v: v >= 1, expected="an integer >= 1 (detections per image)"),
    Field("score_threshold", "float", 0.0, lambda v: v == v, "a number"),
    Field("iou_threshold", "float", valid=lambda v: 0.0 <= v <= 1.0, expected="a number in [0, 1]"),
    Field("is_normalized", "int", 0, lambda v: v in (0, 1), "0 or 1"),
    Field("clip_boxes", "int", 0, lambda v: v in (0, 1), "0 or 1"),
    Field("return_index", "int", 0, lambda v: v in (0, 1), "0 or 1"),
)

OP = register_op(CustomOp("mmdeploy", "TRTBatchedNMS", FIELDS, lowering=f"{__name__}.lowering:lower_batched_nms",
                          plugin=f"{__name__}.plugin:BatchedNMSPlugin", ort=f"{__name__}.ort:KERNEL"))

__getattr__ = lazy_function(f"{__name__}.function", ("multiclass_nms",))
__all__ = ["OP", "FIELDS", "multiclass_nms"]
