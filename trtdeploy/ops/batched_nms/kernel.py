"""TRTBatchedNMS on the GPU, all three steps of ``reference.py`` in Triton, for every image at once.

No host synchronisation and no allocation when the caller passes ``workspace`` and ``out`` (the
plugin passes TensorRT's), so a call can be captured in a CUDA graph. Few launches, since a direct
call is bound by the host's time per launch (a clear of the histograms, then ``num_passes`` + 3):

1. candidate selection, an exact radix select over each image's (box, class) pairs. Every pair
   with score > threshold (and not the background class) gets a unique 64-bit key, ``score``'s
   order-preserving bits above ``(pairs - 1 - pair index)``, so a larger key means "ranks first"
   exactly as a stable descending sort does. ``_radix_pass`` histograms ``DIGIT`` bits of the keys per
   launch (the keys that agree with the bits settled so far); each program re-derives the settled
   bits from the earlier histograms, so no launch settles them alone. The passes stop with up to
   ``SPARE_BITS`` low bits unsettled (``workspace.py``): the pass that finds the ``topk``-th key
   alone ends the search early (later passes return at once).
2. ``_compact`` writes every key at or above the boundary bin (fewer than ``topk`` above it, at
   most ``2**low_bits`` in it; no order) and ``_rank_gather`` ranks them by counting larger keys
   (they are unique), keeps ranks < ``topk`` and writes those candidates' boxes, scores, classes
   and box indices in rank order.
3. ``_greedy_scan``: one program per image walks its ranked candidates 32 at a time. A chunk's
   candidates are compared (IoU, same class) with the detections kept so far, read back from the
   output rows, and with each other; the chunk is settled with register-only bit operations and
   its kept candidates are written to the next output rows. It stops once ``keep_topk`` are kept
   (so it compares at most ``keep_topk`` detections a candidate), then writes the padding rows
   (dets 0, label -1, index -1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from . import workspace as layouts
from .workspace import Workspace, candidates, workspace_bytes

__all__ = ["batched_nms", "workspace_bytes"]

SELECT_BLOCK = 4096  # pairs per program in the selection passes
RANK_BLOCK = 64
KEPT_BLOCK = 128     # kept detections one step of the scan compares a chunk with


@triton.jit
def _ptr(ws, at, dtype: tl.constexpr):
    """The workspace array at byte offset ``at``, typed."""
    return (ws + at).to(tl.pointer_type(dtype))


@triton.jit
def _pair_keys(scores, n, offs, pairs, num_classes, score_threshold, background_label_id,
               INDEX_BITS: tl.constexpr):
    """Unique int64 keys of the pairs ``offs`` of image ``n`` (larger ranks first) and whether each is a candidate."""
    inside = offs < pairs
    s = tl.load(scores + n * pairs + offs, mask=inside, other=0.0)
    passing = inside & (s > score_threshold) & ((offs % num_classes) != background_label_id)
    bits = s.to(tl.int32, bitcast=True)
    monotonic = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64) + 2147483648  # float order, >= 0
    key = (monotonic << INDEX_BITS) | ((1 << INDEX_BITS) - 1 - offs.to(tl.int64))
    return key, passing


@triton.jit
def _settled(hist, n, k, PASSES: tl.constexpr, NUM_PASSES: tl.constexpr, DIGIT: tl.constexpr, BINS: tl.constexpr):
    """From the first ``PASSES`` histograms: the settled key prefix (the keys' bits above the next digit), done?

    When done, every candidate with key >= ``prefix << low_bits`` is selected and no other; otherwise those
    and the keys of the boundary bin (the prefix itself) hold the ``k`` best.
    """
    bins = tl.arange(0, BINS)
    prefix = tl.zeros((), dtype=tl.int64)
    need = tl.zeros((), dtype=tl.int32)
    done = tl.zeros((), dtype=tl.int1)
    for q in tl.static_range(PASSES):
        h = tl.load(hist + (n * NUM_PASSES + q) * BINS + bins)
        total = tl.sum(h, 0)
        if q == 0:
            need = tl.minimum(total, k)  # fewer candidates than topk: the lowest bin's keys end the search
        above = total - tl.cumsum(h, 0)  # keys in higher bins
        digit = tl.sum((above >= need).to(tl.int32), 0)  # the bin holding the need-th key
        at_digit = tl.sum(tl.where(bins == digit, h, 0), 0)
        still = need - tl.sum(tl.where(bins == digit, above, 0), 0)
        prefix = tl.where(done, prefix << DIGIT, (prefix << DIGIT) | digit.to(tl.int64))
        need = tl.where(done, need, still)
        done = done | (at_digit == still)
    return prefix, done


@triton.jit
def _radix_pass(ws, hist_at, scores, pairs, num_classes, k, score_threshold, background_label_id,
                INDEX_BITS: tl.constexpr, PASS: tl.constexpr, NUM_PASSES: tl.constexpr, LOW_BITS: tl.constexpr,
                DIGIT: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    hist = _ptr(ws, hist_at, tl.int32)
    prefix, done = _settled(hist, n, k, PASS, NUM_PASSES, DIGIT, BINS)
    if done == 0:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        key, passing = _pair_keys(scores, n, offs, pairs, num_classes, score_threshold, background_label_id,
                                  INDEX_BITS)
        low: tl.constexpr = LOW_BITS + DIGIT * (NUM_PASSES - 1 - PASS)
        match = passing & ((key >> (low + DIGIT)) == prefix)
        digit = tl.where(match, (key >> low) & (BINS - 1), 0).to(tl.int32)
        h = tl.histogram(digit, BINS)
        bins = tl.arange(0, BINS)
        h -= tl.where(bins == 0, BLOCK - tl.sum(match.to(tl.int32), 0), 0)  # the non-matching keys went to bin 0
        tl.atomic_add(hist + (n * NUM_PASSES + PASS) * BINS + bins, h, mask=h > 0)


@triton.jit
def _compact(ws, hist_at, counter_at, keys_at, scores, pairs, num_classes, k, slots, score_threshold,
             background_label_id, INDEX_BITS: tl.constexpr, NUM_PASSES: tl.constexpr, LOW_BITS: tl.constexpr,
             DIGIT: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    prefix, done = _settled(_ptr(ws, hist_at, tl.int32), n, k, NUM_PASSES, NUM_PASSES, DIGIT, BINS)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    key, passing = _pair_keys(scores, n, offs, pairs, num_classes, score_threshold, background_label_id, INDEX_BITS)
    chosen = passing & (key >= (prefix << LOW_BITS))
    taken = tl.sum(chosen.to(tl.int32), 0)
    if taken > 0:
        first = tl.atomic_add(_ptr(ws, counter_at, tl.int32) + n, taken)
        slot = first + tl.cumsum(chosen.to(tl.int32), 0) - 1
        tl.store(_ptr(ws, keys_at, tl.int64) + n * slots + slot, key, mask=chosen)


@triton.jit
def _rank_gather(ws, counter_at, keys_at, boxes_at, scores_at, labels_at, index_at, scores, boxes, pairs,
                 num_boxes, num_classes, box_classes, k, slots, INDEX_BITS: tl.constexpr, CLIP: tl.constexpr,
                 BLOCK: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    count = tl.load(_ptr(ws, counter_at, tl.int32) + n)
    if tl.program_id(0) * BLOCK < count:
        keys = _ptr(ws, keys_at, tl.int64) + n * slots
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        key = tl.load(keys + rows, mask=rows < count, other=0)
        rank = tl.zeros((BLOCK,), dtype=tl.int32)
        for start in range(0, count, BLOCK_J):
            cols = start + tl.arange(0, BLOCK_J)
            other = tl.load(keys + cols, mask=cols < count, other=-1)
            rank += tl.sum((other[None, :] > key[:, None]).to(tl.int32), 1)
        ok = (rows < count) & (rank < k)  # the boundary bin's keys past the k-th are dropped
        pair = (1 << INDEX_BITS) - 1 - (key & ((1 << INDEX_BITS) - 1))
        box = pair // num_classes
        label = (pair % num_classes).to(tl.int32)
        dst = n * k + rank
        src = ((n * num_boxes + box) * box_classes + label % box_classes) * 4
        cand_boxes = _ptr(ws, boxes_at, tl.float32)
        for j in tl.static_range(4):
            coord = tl.load(boxes + src + j, mask=ok)
            if CLIP:
                coord = tl.minimum(tl.maximum(coord, 0.0), 1.0)
            tl.store(cand_boxes + dst * 4 + j, coord, mask=ok)
        tl.store(_ptr(ws, scores_at, tl.float32) + dst, tl.load(scores + n * pairs + pair, mask=ok), mask=ok)
        tl.store(_ptr(ws, labels_at, tl.int32) + dst, label, mask=ok)
        tl.store(_ptr(ws, index_at, tl.int32) + dst, box.to(tl.int32), mask=ok)


@triton.jit
def _overlaps(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2, iou_threshold):
    """IoU [rows, cols] > threshold of boxes a [rows] and b [cols], computed as torchvision's CUDA nms does."""
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    w = tl.maximum(tl.minimum(ax2[:, None], bx2[None, :]) - tl.maximum(ax1[:, None], bx1[None, :]), 0.0)
    h = tl.maximum(tl.minimum(ay2[:, None], by2[None, :]) - tl.maximum(ay1[:, None], by1[None, :]), 0.0)
    inter = w * h
    return tl.div_rn(inter, area_a[:, None] + area_b[None, :] - inter) > iou_threshold  # IEEE division


@triton.jit
def _greedy_scan(ws, counter_at, boxes_at, scores_at, labels_at, index_at, dets, out_labels, out_index, k,
                 keep_topk, iou_threshold, KEPT_BLOCK: tl.constexpr, PAD_BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    count = tl.minimum(tl.load(_ptr(ws, counter_at, tl.int32) + n), k)
    cand_boxes = _ptr(ws, boxes_at, tl.float32)
    lane = tl.arange(0, 32)
    kept_total = 0
    chunk = 0
    while (chunk * 32 < count) & (kept_total < keep_topk):
        rows = chunk * 32 + lane
        valid = rows < count
        src = n * k + rows
        ax1 = tl.load(cand_boxes + src * 4 + 0, mask=valid, other=0.0)
        ay1 = tl.load(cand_boxes + src * 4 + 1, mask=valid, other=0.0)
        ax2 = tl.load(cand_boxes + src * 4 + 2, mask=valid, other=0.0)
        ay2 = tl.load(cand_boxes + src * 4 + 3, mask=valid, other=0.0)
        label = tl.load(_ptr(ws, labels_at, tl.int32) + src, mask=valid, other=-1)
        # removed by a detection kept from an earlier chunk (the output rows written so far)
        hit = tl.zeros((32,), dtype=tl.int32)
        for start in range(0, kept_total, KEPT_BLOCK):
            cols = start + tl.arange(0, KEPT_BLOCK)
            col_ok = cols < kept_total
            kept_rows = dets + (n * keep_topk + cols) * 5
            over = _overlaps(ax1, ay1, ax2, ay2, tl.load(kept_rows + 0, mask=col_ok, other=0.0),
                             tl.load(kept_rows + 1, mask=col_ok, other=0.0),
                             tl.load(kept_rows + 2, mask=col_ok, other=0.0),
                             tl.load(kept_rows + 3, mask=col_ok, other=0.0), iou_threshold)
            kept_label = tl.load(out_labels + n * keep_topk + cols, mask=col_ok, other=-2).to(tl.int32)
            over = over & col_ok[None, :] & (label[:, None] == kept_label[None, :])
            hit = tl.maximum(hit, tl.max(over.to(tl.int32), axis=1))
        current = tl.sum(tl.where(hit != 0, 1 << lane, 0))  # removed bits of this chunk (distinct bits: sum == or)
        # bit j of inside[i]: candidate j of the chunk ranks after i, has its class and overlaps it
        over = _overlaps(ax1, ay1, ax2, ay2, ax1, ay1, ax2, ay2, iou_threshold)
        over = over & (lane[None, :] > lane[:, None]) & (label[:, None] == label[None, :])
        inside = tl.sum(tl.where(over, (1 << lane)[None, :], 0), axis=1)
        first_slot = kept_total
        kept_bits = 0
        for t in tl.static_range(32):
            ok = (((current >> t) & 1) == 0) & (chunk * 32 + t < count) & (kept_total < keep_topk)
            kept_bits = kept_bits | tl.where(ok, 1 << t, 0)
            current = current | tl.where(ok, tl.sum(tl.where(lane == t, inside, 0)), 0)
            kept_total += ok.to(tl.int32)
        kept = ((kept_bits >> lane) & 1) != 0
        # the kept candidates fill the next output rows, in rank order
        dst = n * keep_topk + (first_slot + tl.cumsum(kept.to(tl.int32), 0) - 1).to(tl.int64)
        tl.store(dets + dst * 5 + 0, ax1, mask=kept)
        tl.store(dets + dst * 5 + 1, ay1, mask=kept)
        tl.store(dets + dst * 5 + 2, ax2, mask=kept)
        tl.store(dets + dst * 5 + 3, ay2, mask=kept)
        tl.store(dets + dst * 5 + 4, tl.load(_ptr(ws, scores_at, tl.float32) + src, mask=kept), mask=kept)
        tl.store(out_labels + dst, label.to(tl.int64), mask=kept)
        tl.store(out_index + dst, tl.load(_ptr(ws, index_at, tl.int32) + src, mask=kept).to(tl.int64), mask=kept)
        tl.debug_barrier()  # the next chunk reads these rows back (other threads of this program)
        chunk += 1
    _pad(dets, out_labels, out_index, n, kept_total, keep_topk, PAD_BLOCK)


@triton.jit
def _pad(dets, out_labels, out_index, n, first, keep_topk, PAD_BLOCK: tl.constexpr):
    """Rows ``first`` .. ``keep_topk`` - 1 of image ``n``: dets 0, label -1, index -1."""
    for start in range(first, keep_topk, PAD_BLOCK):
        slot = start + tl.arange(0, PAD_BLOCK)
        ok = slot < keep_topk
        dst = n * keep_topk + slot
        for j in tl.static_range(5):
            tl.store(dets + dst * 5 + j, 0.0, mask=ok)
        tl.store(out_labels + dst, -1, mask=ok)
        tl.store(out_index + dst, -1, mask=ok)


@triton.jit
def _pad_all(dets, out_labels, out_index, keep_topk, PAD_BLOCK: tl.constexpr):
    _pad(dets, out_labels, out_index, tl.program_id(0).to(tl.int64), 0, keep_topk, PAD_BLOCK)


@dataclass(frozen=True)
class _Plan:
    """What one shape's launches need, worked out once per process (a direct call is host-bound)."""

    nbytes: int
    zeroed: int
    at: tuple  # byte offsets: hist, counter, keys, boxes, scores, labels, index
    slots: int
    select_grid: tuple
    select: dict
    rank_grid: tuple
    pad_block: int


@lru_cache(maxsize=256)
def _plan(num_images: int, pairs: int, k: int, keep_topk: int) -> _Plan:
    layout = Workspace(num_images, pairs, k)
    at = layout.offsets()
    select = dict(INDEX_BITS=layout.index_bits, NUM_PASSES=layout.num_passes, LOW_BITS=layout.low_bits,
                  DIGIT=layouts.DIGIT, BINS=1 << layouts.DIGIT, BLOCK=SELECT_BLOCK, num_warps=8)
    return _Plan(layout.nbytes, layout.zeroed, tuple(at[name] for name in
                                                     ("hist", "counter", "keys", "boxes", "scores", "labels", "index")),
                 layout.slots, (triton.cdiv(pairs, SELECT_BLOCK), num_images), select,
                 (triton.cdiv(layout.slots, RANK_BLOCK), num_images), min(triton.next_power_of_2(keep_topk), 1024))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, *, topk: int, keep_topk: int, score_threshold: float,
                iou_threshold: float, background_label_id: int = -1, clip_boxes: bool = False,
                workspace: torch.Tensor | None = None, out: tuple | None = None):
    """TRTBatchedNMS on the GPU -> (dets [N, keep_topk, 5], labels [N, keep_topk], index [N, keep_topk] int64).

    ``out`` are preallocated outputs (TensorRT's buffers); ``workspace`` (uint8, at least
    ``workspace_bytes``) holds the scratch arrays. With both given the call allocates nothing.
    """
    num_images, num_boxes, num_classes = scores.shape
    pairs = num_boxes * num_classes
    k = candidates(pairs, topk)
    device = scores.device
    if out is None:
        out = (torch.empty((num_images, keep_topk, 5), device=device),
               torch.empty((num_images, keep_topk), dtype=torch.int64, device=device),
               torch.empty((num_images, keep_topk), dtype=torch.int64, device=device))
    dets, labels, index = out
    if num_images == 0:
        return dets, labels, index
    plan = _plan(num_images, pairs, k, keep_topk)
    if k == 0:
        _pad_all[(num_images,)](dets, labels, index, keep_topk, PAD_BLOCK=plan.pad_block)
        return dets, labels, index
    scores = scores.float().contiguous()
    boxes = boxes.float().contiguous()
    if workspace is None:
        workspace = torch.empty(plan.nbytes, dtype=torch.uint8, device=device)
    workspace[:plan.zeroed].zero_()
    hist, counter, keys, cand_boxes, cand_scores, cand_labels, cand_index = plan.at
    args = (pairs, num_classes, k, float(score_threshold), int(background_label_id))
    for step in range(plan.select["NUM_PASSES"]):
        _radix_pass[plan.select_grid](workspace, hist, scores, *args, PASS=step, **plan.select)
    _compact[plan.select_grid](workspace, hist, counter, keys, scores, pairs, num_classes, k, plan.slots,
                               *args[3:], **plan.select)
    _rank_gather[plan.rank_grid](workspace, counter, keys, cand_boxes, cand_scores, cand_labels, cand_index, scores,
                                 boxes, pairs, num_boxes, num_classes, boxes.shape[2], k, plan.slots,
                                 INDEX_BITS=plan.select["INDEX_BITS"], CLIP=bool(clip_boxes), BLOCK=RANK_BLOCK,
                                 BLOCK_J=128, num_warps=4)
    _greedy_scan[(num_images,)](workspace, counter, cand_boxes, cand_scores, cand_labels, cand_index, dets, labels,
                                index, k, keep_topk, float(iou_threshold), KEPT_BLOCK=KEPT_BLOCK,
                                PAD_BLOCK=plan.pad_block)
    return dets, labels, index
