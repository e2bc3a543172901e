"""Plugin-free ``mmdeploy::TRTBatchedNMS``: TopK, GatherElements, an IoU matrix and a bounded Loop.

Exact greedy NMS without a sequential scan over boxes: with candidates sorted by score,
greedy ``keep[i] = valid[i] and no kept j < i of i's class overlaps i``, which depends only
on ``j < i``. The Jacobi sweep ``keep <- valid & not any(S @ keep)`` (S: the strictly
lower-triangular overlap matrix) therefore fixes one more leading position per sweep: after
K sweeps it equals greedy NMS, and any fixed point reached earlier is that same unique
solution. The Loop runs at most K sweeps and stops at the first fixed point (on real
detections, a handful). IoU is computed with torchvision's float32 expression on the
class-offset boxes, so keep sets equal ``torchvision.ops.batched_nms``'s.

Without ``topk`` (<= 0) all B*C pairs are candidates and K is the graph's B*C + 1.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ...errors import BuildError
from ...passes.lower_custom_ops import Emitter, attributes, scalar_input, tensor_input

LOWEST = np.finfo(np.float32).min


def torchvision_iou_threshold(value: float) -> np.float32:
    """The float32 ``t`` for which ``iou > t`` in float32 equals torchvision's ``iou > threshold`` in double.

    The attribute is stored as float32; we read it back as the shortest decimal that rounds to it
    (0.6, not 0.6000000238) and round that down to float32.
    """
    threshold = float(np.format_float_positional(np.float32(value), unique=True))
    t = np.float32(threshold)
    return np.nextafter(t, np.float32(-np.inf)) if float(t) > threshold else t


def lower_batched_nms(node: onnx.NodeProto, e: Emitter) -> None:
    a = attributes(node)
    where = f"node {node.name or '<unnamed>'} ({node.domain}::{node.op_type})"
    if a.get("clip_boxes", 0):
        raise BuildError(f"{where}: clip_boxes=1 has no plugin-free lowering; export with clip_boxes=0")
    keep_top_k = int(a["keep_topk"])
    if keep_top_k <= 0:
        raise BuildError(f"{where}: keep_topk must be > 0, got {keep_top_k}; set post_processing.keep_top_k")
    pre_top_k = int(a.get("topk", -1))
    boxes, scores = node.input[0], node.input[1]
    f = e.const
    neg_inf = f(-np.inf)

    # 1. Candidates: score > threshold, not background; TopK over the flattened (box, class) pairs.
    n_classes = e.dim(scores, 2)
    cls_ids = e.op("Range", e.i64(0), e.squeeze(n_classes, [0]), e.i64(1))
    allowed = e.op("Not", e.op("Equal", cls_ids, e.i64(int(a.get("background_label_id", -1)))))
    ok = e.op("And", e.op("Greater", scores, f(np.float32(a["score_threshold"]))), allowed)
    flat = e.op("Reshape", e.op("Where", ok, scores, neg_inf), e.i64([0, -1]))
    # Pad with -inf pairs so that TopK's k is a constant (topk) even when B*C < topk, and K >= 1.
    pad = e.op("ConstantOfShape", e.op("Concat", e.dim(scores, 0), e.i64([max(pre_top_k, 1)]), axis=0),
               value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-np.inf]))
    flat = e.op("Concat", flat, pad, axis=1)
    k = e.i64([pre_top_k]) if pre_top_k > 0 else e.dim(flat, 1)
    cand_score, cand_id = e.op("TopK", flat, k, axis=1, largest=1, sorted=1, outputs=2)
    valid = e.op("Greater", cand_score, neg_inf)
    cls = e.op("Mod", cand_id, n_classes)
    box_id = e.op("Div", cand_id, n_classes)

    # 2. Candidate boxes: boxes [N, B, 1 or C, 4] -> rows box * Cb + class % Cb of [N, B*Cb, 4], plus a
    #    zero row that padding pairs read.
    n_box_classes = e.dim(boxes, 2)
    table = e.op("Reshape", boxes, e.i64([0, -1, 4]))
    zero_row = e.op("ConstantOfShape", e.op("Concat", e.dim(scores, 0), e.i64([1, 4]), axis=0),
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    is_pair = e.op("Less", cand_id, e.op("Mul", e.dim(scores, 1), n_classes))
    row = e.op("Where", is_pair, e.op("Add", e.op("Mul", box_id, n_box_classes), e.op("Mod", cls, n_box_classes)),
               e.dim(table, 1))
    rows4 = e.op("Expand", e.unsqueeze(row, [2]), e.op("Concat", e.op("Shape", row), e.i64([4]), axis=0))
    cand_boxes = e.op("GatherElements", e.op("Concat", table, zero_row, axis=1), rows4, axis=1)

    # 3. torchvision's coordinate trick: offset = class * (max coordinate of the candidates + 1).
    valid3 = e.unsqueeze(valid, [2])
    max_coord = e.unsqueeze(e.reduce("ReduceMax", e.op("Where", valid3, cand_boxes, f(LOWEST)), [1, 2], 0), [1])
    offset = e.op("Mul", e.op("Cast", cls, to=TensorProto.FLOAT), e.op("Add", max_coord, f(1.0)))
    nms_boxes = e.op("Add", cand_boxes, e.unsqueeze(offset, [2]))

    # 4. Overlaps, with torchvision's float32 arithmetic: inter / (area_i + area_j - inter) > threshold.
    x1, y1, x2, y2 = e.op("Split", nms_boxes, e.i64([1, 1, 1, 1]), axis=2, outputs=4)
    area = e.op("Mul", e.op("Sub", x2, x1), e.op("Sub", y2, y1))           # [N, K, 1]

    def pairwise(op_type, col):                                              # [N, K, K]: (i, j)
        return e.op(op_type, col, e.op("Transpose", col, perm=[0, 2, 1]))

    zero = f(0.0)
    w = e.op("Max", e.op("Sub", pairwise("Min", x2), pairwise("Max", x1)), zero)
    h = e.op("Max", e.op("Sub", pairwise("Min", y2), pairwise("Max", y1)), zero)
    inter = e.op("Mul", w, h)
    union = e.op("Sub", e.op("Add", area, e.op("Transpose", area, perm=[0, 2, 1])), inter)
    overlaps = e.op("Greater", e.op("Div", inter, union), f(torchvision_iou_threshold(a["iou_threshold"])))
    rank = e.op("Range", e.i64(0), e.squeeze(e.dim(cand_score, 1), [0]), e.i64(1))
    earlier = e.op("Less", rank, e.unsqueeze(rank, [1]))                    # [K, K]: j < i
    suppressors = e.op("Cast", e.op("And", overlaps, earlier), to=TensorProto.FLOAT)

    # 5. Fixed-point sweeps in a Loop: keep <- valid & not (suppressors @ keep > 0), until unchanged.
    body = e.sub()
    keep_in = body.name("keep_in")
    hits = body.op("MatMul", suppressors, body.op("Cast", body.unsqueeze(keep_in, [2]), to=TensorProto.FLOAT))
    keep_out = body.op("And", valid, body.op("Not", body.squeeze(body.op("Greater", hits, body.const(0.0)), [2])))
    changed = body.op("Cast", body.reduce("ReduceMax", body.op("Cast", body.op("Xor", keep_in, keep_out),
                                                                to=TensorProto.INT32), [0, 1], keepdims=0),
                      to=TensorProto.BOOL)
    cond_in = body.name("cond_in")
    graph = body.graph("nms_sweeps", [scalar_input(body.name("iter"), TensorProto.INT64),
                                      scalar_input(cond_in, TensorProto.BOOL),
                                      tensor_input(keep_in, TensorProto.BOOL)], [changed, keep_out])
    trips = e.squeeze(e.dim(cand_score, 1), [0])
    keep = e.op("Loop", trips, e.const(True, np.bool_), valid, body=graph)

    # 6. The first keep_top_k survivors in rank order: TopK on -rank (padded so k always fits).
    rank_key = e.op("Where", keep, e.op("Neg", e.op("Cast", rank, to=TensorProto.FLOAT)), neg_inf)
    pad_keys = e.op("ConstantOfShape", e.op("Concat", e.dim(scores, 0), e.i64([keep_top_k]), axis=0),
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-np.inf]))
    key, pos = e.op("TopK", e.op("Concat", rank_key, pad_keys, axis=1), e.i64([keep_top_k]), axis=1, outputs=2)
    found = e.op("Greater", key, neg_inf)
    pos = e.op("Min", pos, e.op("Sub", e.dim(cand_score, 1), e.i64(1)))
    pos4 = e.op("Expand", e.unsqueeze(pos, [2]), e.op("Concat", e.op("Shape", pos), e.i64([4]), axis=0))
    det_boxes = e.op("GatherElements", cand_boxes, pos4, axis=1)
    det_scores = e.unsqueeze(e.op("GatherElements", cand_score, pos, axis=1), [2])
    dets = e.op("Concat", det_boxes, det_scores, axis=2)
    e.output(e.op("Where", e.unsqueeze(found, [2]), dets, zero), node.output[0])
    minus_one = e.i64(-1)
    e.output(e.op("Where", found, e.op("GatherElements", cls, pos, axis=1), minus_one), node.output[1])
    if len(node.output) > 2 and node.output[2]:
        e.output(e.op("Where", found, e.op("GatherElements", box_id, pos, axis=1), minus_one), node.output[2])
