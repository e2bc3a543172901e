"""Plugin-free ``mmdeploy::TRTBatchedNMS``: TopK, Gathers and a bounded Loop of block sweeps.

Exact greedy NMS without a sequential scan over boxes. With the K candidates sorted by score,
greedy ``keep[i] = valid[i] and no kept j < i of i's class overlaps i`` depends only on
``j < i``. Candidates are processed in blocks of ``BLOCK``; for the current block, with all
earlier blocks final, the Jacobi sweep ``keep[block] <- valid & not any(overlap with a kept,
earlier candidate)`` fixes at least one more leading position of the block per sweep, so it
reaches greedy's answer in at most BLOCK sweeps, and the first sweep that changes nothing
proves it (the fixed point is unique). Then the next block starts. Each sweep only compares
the block with the kept candidates so far (at most keep_topk - 1 before the block, plus the
block), and the Loop stops as soon as every image has keep_topk survivors, or as soon as no image
has a valid candidate (score above the threshold, rank below topk) in the blocks not yet final:
valid candidates are a prefix of the sorted order, so nothing keepable is skipped, and with no
valid candidate at all the Loop makes no trip. The work follows the detections, not K squared.
Trip bound: (K / BLOCK) * (BLOCK + 1).

IoU is computed with torchvision's float32 expression on the class-offset boxes, so keep sets
equal ``torchvision.ops.batched_nms``'s. A ``topk`` above MAX_TOPK (TensorRT caps TopK's k at 3840)
is selected in pages of TopK. Without ``topk`` (<= 0) all B*C pairs are candidates, in one TopK whose k
is the graph's B*C (TensorRT builds that only while B*C <= 3840).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto

from ...errors import BuildError
from ...utils.onnx_build import Emitter, scalar_input, tensor_input
from . import OP

LOWEST = np.finfo(np.float32).min
MAX_TOPK = 3840  # TensorRT's largest TopK k; a larger topk is taken in pages
BLOCK = 128  # candidates per block: small enough that a sweep is cheap, large enough for few Loop trips


def torchvision_iou_threshold(value: float) -> np.float32:
    """The float32 ``t`` for which ``iou > t`` in float32 equals torchvision's ``iou > threshold`` in double.

    The attribute is stored as float32; we read it back as the shortest decimal that rounds to it
    (0.6, not 0.6000000238) and round that down to float32.
    """
    threshold = float(np.format_float_positional(np.float32(value), unique=True))
    t = np.float32(threshold)
    return np.nextafter(t, np.float32(-np.inf)) if float(t) > threshold else t


def sorted_top(e: Emitter, values: str, k: str, k_value: int | None) -> tuple[str, str]:
    """TopK(values, k) along axis 1, sorted, in pages of at most MAX_TOPK (TensorRT's limit) when k is known.

    Each page takes the best of what earlier pages left (those set to -inf), so the pages concatenate
    into the exact sorted top k, ties by lower index first as in one TopK.
    """
    if k_value is None or k_value <= MAX_TOPK:
        return tuple(e.op("TopK", values, k, axis=1, largest=1, sorted=1, outputs=2))
    scores, ids = [], []
    for taken in range(0, k_value, MAX_TOPK):
        page_scores, page_ids = e.op("TopK", values, e.i64([min(MAX_TOPK, k_value - taken)]), axis=1, outputs=2)
        scores.append(page_scores)
        ids.append(page_ids)
        values = e.op("ScatterElements", values, page_ids, e.full(e.op("Shape", page_ids), -np.inf), axis=1)
    return e.op("Concat", *scores, axis=1), e.op("Concat", *ids, axis=1)


class Candidates(NamedTuple):
    """Step 1's result: the K best (box, class) pairs per image, sorted by score (K a multiple of BLOCK)."""

    scores: str      # the node's scores [N, B, C], background masked
    count: str       # K, as a 1-element int64 tensor
    score: str       # [N, K] candidate scores (padding -inf)
    pair: str        # [N, K] index of the pair in the flattened [B*C] scores (padding beyond B*C)
    rank: str        # [K] 0..K-1
    valid: str       # [N, K] score > threshold and rank < topk: a prefix of each row
    cls: str         # [N, K] class of the pair
    box: str         # [N, K] box of the pair
    classes: str     # C, as a 1-element int64 tensor


def lower_batched_nms(values: dict, node: onnx.NodeProto, e: Emitter) -> None:
    """Replace one TRTBatchedNMS node, in the five steps of the module docstring's method; ``values`` are its
    fields (``OP.fields``, range-checked)."""
    if values["clip_boxes"]:
        raise BuildError(f"{OP.where(node)}: clip_boxes=1 has no plugin-free lowering; export with clip_boxes=0")
    keep_top_k = values["keep_topk"]
    c = _candidates(e, node.input[1], np.float32(values["score_threshold"]), values["topk"],
                    values["background_label_id"])
    boxes = _candidate_boxes(e, node.input[0], c)
    keep = _block_sweeps(e, c, _nms_table(e, c, boxes), keep_top_k, torchvision_iou_threshold(values["iou_threshold"]))
    _first_survivors(e, node, c, boxes, keep, keep_top_k)


def _candidates(e: Emitter, scores: str, score_threshold: np.float32, pre_top_k: int, background: int) -> Candidates:
    """1. Candidates: score > threshold, not background; TopK over the flattened (box, class) pairs."""
    n_classes = e.dim(scores, 2)
    threshold = e.const(score_threshold)
    if background >= 0:  # else no masking: pairs at or below the threshold sort after every candidate anyway
        allowed = e.op("Not", e.op("Equal", e.op("Range", e.i64(0), e.squeeze(n_classes, [0]), e.i64(1)),
                                   e.i64(background)))
        scores = e.op("Where", e.op("And", e.op("Greater", scores, threshold), allowed), scores, e.const(-np.inf))
    flat = e.op("Reshape", scores, e.i64([0, -1]))
    # Pad with -inf pairs so that TopK's k (K, a multiple of BLOCK) always fits and K >= BLOCK.
    if pre_top_k > 0:
        n_cand = e.i64([-(-pre_top_k // BLOCK) * BLOCK])
    else:
        blocks = e.op("Div", e.op("Add", e.dim(flat, 1), e.i64([BLOCK - 1])), e.i64([BLOCK]))
        n_cand = e.op("Mul", e.op("Max", blocks, e.i64([1])), e.i64([BLOCK]))
    pad = e.full(e.op("Concat", e.dim(scores, 0), n_cand, axis=0), -np.inf)
    cand_score, cand_id = sorted_top(e, e.op("Concat", flat, pad, axis=1), n_cand,
                                     -(-pre_top_k // BLOCK) * BLOCK if pre_top_k > 0 else None)
    rank = e.op("Range", e.i64(0), e.squeeze(n_cand, [0]), e.i64(1))                        # [K]
    valid = e.op("Greater", cand_score, threshold)
    if pre_top_k > 0:
        valid = e.op("And", valid, e.op("Less", rank, e.i64(pre_top_k)))
    return Candidates(scores, n_cand, cand_score, cand_id, rank, valid, e.op("Mod", cand_id, n_classes),
                      e.op("Div", cand_id, n_classes), n_classes)


def _candidate_boxes(e: Emitter, boxes: str, c: Candidates) -> str:
    """2. Candidate boxes: boxes [N, B, 1 or C, 4] -> rows box * Cb + class % Cb of [N, B*Cb, 4], plus a
    zero row that padding pairs read. Returns [N, K, 4]."""
    n_box_classes = e.dim(boxes, 2)
    table = e.op("Reshape", boxes, e.i64([0, -1, 4]))
    zero_row = e.full(e.op("Concat", e.dim(c.scores, 0), e.i64([1, 4]), axis=0), 0.0)
    is_pair = e.op("Less", c.pair, e.op("Mul", e.dim(c.scores, 1), c.classes))
    row = e.op("Where", is_pair, e.op("Add", e.op("Mul", c.box, n_box_classes), e.op("Mod", c.cls, n_box_classes)),
               e.dim(table, 1))
    rows4 = e.op("Expand", e.unsqueeze(row, [2]), e.op("Concat", e.op("Shape", row), e.i64([4]), axis=0))
    return e.op("GatherElements", e.op("Concat", table, zero_row, axis=1), rows4, axis=1)


def _nms_table(e: Emitter, c: Candidates, cand_boxes: str) -> str:
    """3. torchvision's coordinate trick: offset = class * (max coordinate of the candidates + 1).
    Returns [N, K, 5]: the offset boxes and their areas."""
    valid3 = e.unsqueeze(c.valid, [2])
    max_coord = e.unsqueeze(e.reduce("ReduceMax", e.op("Where", valid3, cand_boxes, e.const(LOWEST)), [1, 2], 0), [1])
    offset = e.op("Mul", e.op("Cast", c.cls, to=TensorProto.FLOAT), e.op("Add", max_coord, e.const(1.0)))
    nms_boxes = e.op("Add", cand_boxes, e.unsqueeze(offset, [2]))
    x1, y1, x2, y2 = e.op("Split", nms_boxes, e.i64([1, 1, 1, 1]), axis=2, outputs=4)
    area = e.op("Mul", e.op("Sub", x2, x1), e.op("Sub", y2, y1))                            # [N, K, 1]
    return e.op("Concat", nms_boxes, area, axis=2)


def _block_sweeps(e: Emitter, c: Candidates, nms_table: str, keep_top_k: int, iou_threshold: np.float32) -> str:
    """4. Block sweeps: a Loop of ``_sweep`` trips, at most (K / BLOCK) * (BLOCK + 1), none when no candidate is
    valid. Returns keep [N, K], final for every candidate."""
    body = _sweep(e.sub(), c, nms_table, keep_top_k, iou_threshold)
    max_trips = e.squeeze(e.op("Mul", e.op("Div", c.count, e.i64([BLOCK])), e.i64([BLOCK + 1])), [0])
    any_valid = e.op("Cast", e.reduce("ReduceMax", e.op("Cast", c.valid, to=TensorProto.INT32), [0, 1], keepdims=0),
                     to=TensorProto.BOOL)
    last_block, keep = e.op("Loop", max_trips, any_valid, e.i64(0), c.valid, body=body, outputs=2)
    return e.op("And", keep, e.op("Less", c.rank, e.op("Mul", last_block, e.i64(BLOCK))))


def _sweep(b: Emitter, c: Candidates, nms_table: str, keep_top_k: int, iou_threshold: np.float32) -> onnx.GraphProto:
    """One Loop trip. State: the block index and keep [N, K] (valid beyond the current block). The block's
    candidates become valid and not suppressed by a kept, earlier one; the block index moves on once a sweep
    changes nothing. Exits: every image has keep_top_k survivors, or no valid candidate is left."""
    rank, valid = c.rank, c.valid
    block_in, keep_in = b.name("block_in"), b.name("keep_in")
    start = b.op("Mul", block_in, b.i64(BLOCK))
    rows = b.op("Add", start, b.i64(np.arange(BLOCK)))                                    # [BLOCK]
    hit = _suppressed(b, c, nms_table, keep_in, rows, b.op("Add", start, b.i64(BLOCK)), keep_top_k, iou_threshold)
    new_block = b.op("And", b.op("Gather", valid, rows, axis=1), b.op("Not", hit))
    old_block = b.op("Gather", keep_in, rows, axis=1)
    block_rows = b.op("Expand", b.unsqueeze(rows, [0]), b.op("Shape", new_block))
    keep_out = b.op("ScatterElements", keep_in, block_rows, new_block, axis=1)
    converged = b.op("Not", b.op("Cast", b.reduce("ReduceMax", b.op("Cast", b.op("Xor", new_block, old_block),
                                                                    to=TensorProto.INT32), [0, 1], keepdims=0),
                                 to=TensorProto.BOOL))
    block_out = b.op("Add", block_in, b.op("Cast", converged, to=TensorProto.INT64))
    done_rows = b.op("Less", rank, b.op("Mul", block_out, b.i64(BLOCK)))
    n_kept = b.reduce("ReduceSum", b.op("Cast", b.op("And", keep_out, done_rows), to=TensorProto.INT64), [1], 0)
    enough = b.op("GreaterOrEqual", b.reduce("ReduceMin", n_kept, [0], keepdims=0), b.i64(keep_top_k))
    # The second exit: valid is a prefix of each image's sorted candidates (score > threshold, rank < topk),
    # so once no image has a valid candidate at or after the next block, nothing more can be kept. This
    # also ends the Loop after the last block (the K padded slots are never valid).
    valid_left = b.reduce("ReduceMax", b.op("Cast", b.op("And", valid, b.op("Not", done_rows)),
                                            to=TensorProto.INT32), [0, 1], keepdims=0)
    go_on = b.op("And", b.op("Cast", valid_left, to=TensorProto.BOOL), b.op("Not", enough))
    return b.graph("nms_block_sweeps", [scalar_input(b.name("iter"), TensorProto.INT64),
                                        scalar_input(b.name("cond"), TensorProto.BOOL),
                                        scalar_input(block_in, TensorProto.INT64),
                                        tensor_input(keep_in, TensorProto.BOOL)], [go_on, block_out, keep_out])


def _suppressed(b: Emitter, c: Candidates, nms_table: str, keep_in: str, rows: str, block_end: str, keep_top_k: int,
                iou_threshold: np.float32) -> str:
    """[N, BLOCK]: whether a kept candidate ranked before it overlaps each of the block's candidates by more than
    ``iou_threshold``. Only the kept ones are compared: at most keep_top_k + BLOCK (TopK on -rank)."""
    seen = b.op("And", keep_in, b.op("Less", c.rank, block_end))
    n_kept_slots = b.op("Min", b.i64([keep_top_k + BLOCK]), c.count)
    kept_key, kept_rank = b.op("TopK", b.op("Where", seen, b.op("Neg", b.op("Cast", c.rank, to=TensorProto.FLOAT)),
                                            b.const(-np.inf)), n_kept_slots, axis=1, outputs=2)   # [N, M]
    kept = b.op("Greater", kept_key, b.const(-np.inf))
    kept_rows = b.op("Expand", b.unsqueeze(kept_rank, [2]),
                     b.op("Concat", b.op("Shape", kept_rank), b.i64([5]), axis=0))
    other = b.op("GatherElements", nms_table, kept_rows, axis=1)                            # [N, M, 5]
    this = b.op("Gather", nms_table, rows, axis=1)                                          # [N, BLOCK, 5]
    ox1, oy1, ox2, oy2, o_area = b.op("Split", b.op("Transpose", other, perm=[0, 2, 1]), b.i64([1] * 5), axis=1,
                                      outputs=5)                                            # [N, 1, M]
    tx1, ty1, tx2, ty2, t_area = b.op("Split", this, b.i64([1] * 5), axis=2, outputs=5)     # [N, BLOCK, 1]
    zero = b.const(0.0)
    w = b.op("Max", b.op("Sub", b.op("Min", tx2, ox2), b.op("Max", tx1, ox1)), zero)
    h = b.op("Max", b.op("Sub", b.op("Min", ty2, oy2), b.op("Max", ty1, oy1)), zero)
    inter = b.op("Mul", w, h)                                                               # [N, BLOCK, M]
    iou = b.op("Div", inter, b.op("Sub", b.op("Add", t_area, o_area), inter))
    earlier = b.op("Less", b.unsqueeze(kept_rank, [1]), b.unsqueeze(rows, [0, 2]))
    suppressing = b.op("And", b.op("And", b.op("Greater", iou, b.const(iou_threshold)), earlier),
                       b.unsqueeze(kept, [1]))
    return b.op("Cast", b.reduce("ReduceMax", b.op("Cast", suppressing, to=TensorProto.INT32), [2], keepdims=0),
                to=TensorProto.BOOL)


def _first_survivors(e: Emitter, node: onnx.NodeProto, c: Candidates, cand_boxes: str, keep: str,
                     keep_top_k: int) -> None:
    """5. The first keep_top_k survivors in rank order: TopK on -rank (padded so k always fits), as the node's
    outputs dets [N, keep_top_k, 5], labels and (when asked) box indices [N, keep_top_k] (padding 0 / -1)."""
    neg_inf, f = e.const(-np.inf), e.const
    rank, cand_score, cls, box_id, scores = c.rank, c.score, c.cls, c.box, c.scores
    rank_key = e.op("Where", keep, e.op("Neg", e.op("Cast", rank, to=TensorProto.FLOAT)), neg_inf)
    pad_keys = e.full(e.op("Concat", e.dim(scores, 0), e.i64([keep_top_k]), axis=0), -np.inf)
    key, pos = e.op("TopK", e.op("Concat", rank_key, pad_keys, axis=1), e.i64([keep_top_k]), axis=1, outputs=2)
    found = e.op("Greater", key, neg_inf)
    pos = e.op("Min", pos, e.op("Sub", e.dim(cand_score, 1), e.i64(1)))
    pos4 = e.op("Expand", e.unsqueeze(pos, [2]), e.op("Concat", e.op("Shape", pos), e.i64([4]), axis=0))
    det_boxes = e.op("GatherElements", cand_boxes, pos4, axis=1)
    det_scores = e.unsqueeze(e.op("GatherElements", cand_score, pos, axis=1), [2])
    dets = e.op("Concat", det_boxes, det_scores, axis=2)
    e.output(e.op("Where", e.unsqueeze(found, [2]), dets, f(0.0)), node.output[0])
    minus_one = e.i64(-1)
    e.output(e.op("Where", found, e.op("GatherElements", cls, pos, axis=1), minus_one), node.output[1])
    if len(node.output) > 2 and node.output[2]:
        e.output(e.op("Where", found, e.op("GatherElements", box_id, pos, axis=1), minus_one), node.output[2])
