"""Append box decoding and batched NMS to a detector graph that ends in a raw head.

Exporters such as ultralytics' ``yolo export format=onnx`` stop before NMS: the graph returns
one tensor ``[N, 4 + C, A]`` (per anchor: box centre x, y, width, height in input pixels, then C
class scores, already activated), or its transpose ``[N, A, 4 + C]``. This pass adds, at the ONNX
level, the decoding ``(cx, cy, w, h) -> (x1, y1, x2, y2)`` and one ``mmdeploy::TRTBatchedNMS``
node, i.e. the op trtdeploy's own detectors export, so ``lower_custom_ops`` then lowers it to
standard ONNX (``custom_ops='auto'``/``'plugin-free'``) or keeps it for the plugin (``'plugin'``).

Guarantee: the returned graph has the same inputs; its outputs are ``dets [N, keep_top_k, 5]``
(x1, y1, x2, y2, score) and ``labels [N, keep_top_k]`` (int64, -1 in padding rows), which are
exactly ``batched_nms.multiclass_nms`` of the decoded boxes and the scores with the given
thresholds; the raw head is no longer an output.
"""
from __future__ import annotations

from typing import Mapping

import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from ..errors import ModelError
from ..utils.logging import logger
from ..utils.onnx_graph import weightless

NMS_DOMAIN, NMS_OP = "mmdeploy", "TRTBatchedNMS"  # ops/batched_nms/function.py's node
# MMDeploy's detection defaults (configs/mmdet/_base_/base_static.py), for the keys the config leaves out.
DEFAULTS = {"score_threshold": 0.05, "iou_threshold": 0.5, "pre_top_k": 1000, "keep_top_k": 100,
            "background_label_id": -1}


def _static_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _head_dims(model: onnx.ModelProto) -> list[int | None]:
    """The first output's dims, from shape inference where a dynamic export names even C symbolically."""
    dims = _static_dims(model.graph.output[0])
    if len(dims) == 3 and dims[1] is None and dims[2] is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(weightless(model), data_prop=True)
            dims = _static_dims(inferred.graph.output[0])
        except Exception:  # inference gives up on some graphs; then the declared shape is all we know
            pass
    return dims


def declared_classes(model: onnx.ModelProto) -> int | None:
    """How many classes the file's metadata names (ultralytics writes ``names`` = "{0: 'person', ...}"), if any."""
    import ast

    value = next((p.value for p in model.metadata_props if p.key == "names"), None)
    try:
        names = ast.literal_eval(value) if value else None
    except (ValueError, SyntaxError):
        return None
    return len(names) if isinstance(names, (dict, list)) and names else None


def raw_head_layout(model: onnx.ModelProto) -> tuple[str, int] | None:
    """('channels_first' | 'channels_last', number of classes) when the graph's only output is a raw
    [N, 4 + C, A] (or [N, A, 4 + C]) head with static C, else None. Where the file's metadata names fewer
    classes than the head has channels after the box (a pose head's keypoints follow its class scores), the
    metadata's count is the number of classes."""
    if len(model.graph.output) != 1:
        return None
    dims = _head_dims(model)
    if len(dims) != 3 or dims[1] is None and dims[2] is None:
        return None
    second, third = dims[1], dims[2]
    if second is not None and second > 4 and (third is None or third > second):
        layout = "channels_first", second - 4
    elif third is not None and third > 4:
        layout = "channels_last", third - 4
    else:
        return None
    declared = declared_classes(model)
    return (layout[0], declared) if declared is not None and declared < layout[1] else layout


def append_nms(model: onnx.ModelProto, post_processing: Mapping, output_names: tuple[str, str] = ("dets", "labels")
               ) -> onnx.ModelProto:
    """Decode the raw head and append ``mmdeploy::TRTBatchedNMS`` (see the module doc); changes ``model`` in place."""
    layout = raw_head_layout(model)
    if layout is None:
        out = model.graph.output
        raise ModelError(f"codebase_config.post_processing asks for NMS to be appended, but the graph's outputs "
                         f"{[o.name for o in out]} are not one raw detection head [N, 4 + C, A]; remove "
                         f"post_processing or export the model without its own post-processing")
    order, num_classes = layout
    channels = _head_dims(model)[1 if order == "channels_first" else 2]
    if channels is not None and channels > 4 + num_classes:
        logger.info("the raw head has %d channels: 4 box, %d class scores (the file's metadata names %d classes) and "
                    "%d more (e.g. keypoints or mask coefficients), which the appended NMS drops", channels,
                    num_classes, num_classes, channels - 4 - num_classes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ModelError(f"appending NMS needs ONNX opset >= 13 and the graph has opset {opset}; export it again "
                         f"with a newer opset (e.g. `yolo export format=onnx opset=17`)")
    settings = {**DEFAULTS, **dict(post_processing)}
    head = model.graph.output[0].name
    nodes = []

    def node(op_type: str, inputs: list[str], **attrs) -> str:
        out = f"/append_nms/{op_type}_{len(nodes)}"
        nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(value, dtype) -> str:
        out = f"/append_nms/const_{len(nodes)}"
        nodes.append(helper.make_node("Constant", [], [out], name=out,
                                      value=numpy_helper.from_array(np.asarray(value, dtype))))
        return out

    per_anchor = node("Transpose", [head], perm=[0, 2, 1]) if order == "channels_first" else head  # [N, A, 4 + C]
    axis = const([2], np.int64)
    centre = node("Slice", [per_anchor, const([0], np.int64), const([2], np.int64), axis])
    size = node("Slice", [per_anchor, const([2], np.int64), const([4], np.int64), axis])
    scores = node("Slice", [per_anchor, const([4], np.int64), const([4 + num_classes], np.int64), axis])
    half = node("Mul", [size, const(0.5, np.float32)])
    corners = node("Concat", [node("Sub", [centre, half]), node("Add", [centre, half])], axis=2)  # [N, A, 4]
    boxes = node("Unsqueeze", [corners, const([2], np.int64)])  # [N, A, 1, 4]: one box for all classes
    nodes.append(helper.make_node(
        NMS_OP, [boxes, scores], list(output_names), name="/append_nms/TRTBatchedNMS", domain=NMS_DOMAIN,
        num_classes=num_classes, background_label_id=int(settings["background_label_id"]),
        iou_threshold=float(settings["iou_threshold"]), score_threshold=float(settings["score_threshold"]),
        topk=int(settings["pre_top_k"]), keep_topk=int(settings["keep_top_k"]), is_normalized=0, clip_boxes=0,
        return_index=0))
    model.graph.node.extend(nodes)
    del model.graph.output[:]
    keep = int(settings["keep_top_k"])
    model.graph.output.extend([
        helper.make_tensor_value_info(output_names[0], TensorProto.FLOAT, ["batch", keep, 5]),
        helper.make_tensor_value_info(output_names[1], TensorProto.INT64, ["batch", keep])])
    if not any(o.domain == NMS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(NMS_DOMAIN, 1))
    return model
