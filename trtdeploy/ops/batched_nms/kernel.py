"""Triton suppression step of TRTBatchedNMS (steps 1 and 3 are shared PyTorch, see reference.py).

Two kernels, for every image at once:
- ``_overlap_bits``: bit j of word w of row i is set when candidate 32*w+j ranks after i, has
  its class and overlaps it by IoU > threshold. One program fills a [BLOCK_I x 32] tile.
- ``_greedy_scan``: one program per image walks its ranked candidates 32 at a time: it loads
  the 32 rows of bits once, settles the chunk with register-only bit operations, writes the
  kept candidates to the next output rows (``reference.assemble``'s layout) and ORs their rows
  into the running "removed" words. It stops once ``keep_topk`` are kept (later candidates
  cannot reach the output), so the serial part is short for real detectors.
The bit words live in the caller's workspace (TensorRT's, inside the plugin).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import select_candidates

BLOCK_I = 32


@triton.jit
def _overlap_bits(boxes, labels, counts, bits, k, words, iou_threshold, BLOCK_I: tl.constexpr):
    row_block = tl.program_id(0)
    word = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    count = tl.load(counts + n)
    rows = row_block * BLOCK_I + tl.arange(0, BLOCK_I)
    cols = word * 32 + tl.arange(0, 32)
    row_ok = rows < count
    col_ok = cols < count
    base = boxes + n * k * 4
    ax1 = tl.load(base + rows * 4 + 0, mask=row_ok, other=0.0)
    ay1 = tl.load(base + rows * 4 + 1, mask=row_ok, other=0.0)
    ax2 = tl.load(base + rows * 4 + 2, mask=row_ok, other=0.0)
    ay2 = tl.load(base + rows * 4 + 3, mask=row_ok, other=0.0)
    bx1 = tl.load(base + cols * 4 + 0, mask=col_ok, other=0.0)
    by1 = tl.load(base + cols * 4 + 1, mask=col_ok, other=0.0)
    bx2 = tl.load(base + cols * 4 + 2, mask=col_ok, other=0.0)
    by2 = tl.load(base + cols * 4 + 3, mask=col_ok, other=0.0)
    row_label = tl.load(labels + n * k + rows, mask=row_ok, other=-1)
    col_label = tl.load(labels + n * k + cols, mask=col_ok, other=-2)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    w = tl.maximum(tl.minimum(ax2[:, None], bx2[None, :]) - tl.maximum(ax1[:, None], bx1[None, :]), 0.0)
    h = tl.maximum(tl.minimum(ay2[:, None], by2[None, :]) - tl.maximum(ay1[:, None], by1[None, :]), 0.0)
    inter = w * h
    iou = tl.div_rn(inter, area_a[:, None] + area_b[None, :] - inter)  # IEEE division, as torchvision
    hit = (iou > iou_threshold) & (cols[None, :] > rows[:, None]) & (row_label[:, None] == col_label[None, :])
    shifts = tl.arange(0, 32)
    packed = tl.sum(tl.where(hit, (1 << shifts)[None, :], 0), axis=1)  # distinct bits: sum == or
    tl.store(bits + (n * k + rows) * words + word, packed, mask=rows < k)


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _greedy_scan(bits, counts, boxes, scores, labels, box_index, dets, out_labels, out_index, k, words, keep_topk,
                 WORDS: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    count = tl.load(counts + n)
    lanes = tl.arange(0, WORDS)
    lane32 = tl.arange(0, 32)
    removed = tl.zeros((WORDS,), dtype=tl.int32)
    kept_total = 0
    chunk = 0
    while (chunk * 32 < count) & (kept_total < keep_topk):
        rows = chunk * 32 + lane32
        valid = rows < count
        tile = tl.load(bits + (n * k + rows)[:, None] * words + lanes[None, :],
                       mask=valid[:, None] & (lanes < words)[None, :], other=0)
        current = tl.sum(tl.where(lanes == chunk, removed, 0))       # removed bits of this chunk
        inside = tl.sum(tl.where(lanes[None, :] == chunk, tile, 0), axis=1)  # each row's bits in this chunk
        first_slot = kept_total
        kept_bits = 0
        for t in tl.static_range(32):
            ok = (((current >> t) & 1) == 0) & (chunk * 32 + t < count) & (kept_total < keep_topk)
            kept_bits = kept_bits | tl.where(ok, 1 << t, 0)
            current = current | tl.where(ok, tl.sum(tl.where(lane32 == t, inside, 0)), 0)
            kept_total += ok.to(tl.int32)
        kept = ((kept_bits >> lane32) & 1) != 0
        # the kept candidates fill the next output rows, in rank order
        slot = (first_slot + tl.cumsum(kept.to(tl.int32), 0) - 1).to(tl.int64)
        src = n * k + rows
        dst = n * keep_topk + slot
        for j in tl.static_range(4):
            tl.store(dets + dst * 5 + j, tl.load(boxes + src * 4 + j, mask=kept), mask=kept)
        tl.store(dets + dst * 5 + 4, tl.load(scores + src, mask=kept), mask=kept)
        tl.store(out_labels + dst, tl.load(labels + src, mask=kept), mask=kept)
        tl.store(out_index + dst, tl.load(box_index + src, mask=kept), mask=kept)
        removed = removed | tl.reduce(tl.where(kept[:, None], tile, 0), 0, _or)
        chunk += 1


def workspace_bytes(num_images: int, k: int) -> int:
    """Bytes of workspace ``batched_nms`` needs for ``k`` candidates per image: the bit words."""
    return num_images * k * triton.cdiv(k, 32) * 4 + 256


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, *, topk: int, keep_topk: int, score_threshold: float,
                iou_threshold: float, background_label_id: int = -1, clip_boxes: bool = False,
                workspace: torch.Tensor | None = None, out: tuple | None = None):
    """TRTBatchedNMS on the GPU -> (dets [N, keep_topk, 5], labels [N, keep_topk], index [N, keep_topk] int64).

    ``out`` are preallocated outputs (TensorRT's buffers); ``workspace`` holds the bit words.
    """
    cand_boxes, cand_scores, label, box_index, count = select_candidates(
        boxes, scores, topk=topk, score_threshold=score_threshold, background_label_id=background_label_id,
        clip_boxes=clip_boxes)
    num_images, k = cand_scores.shape
    device = scores.device
    if out is None:
        out = (torch.empty((num_images, keep_topk, 5), device=device),
               torch.empty((num_images, keep_topk), dtype=torch.int64, device=device),
               torch.empty((num_images, keep_topk), dtype=torch.int64, device=device))
    dets, labels, index = out
    dets.zero_()  # padding rows: dets 0, label -1, index -1
    labels.fill_(-1)
    index.fill_(-1)
    if k == 0 or num_images == 0:
        return dets, labels, index
    words = triton.cdiv(k, 32)
    if workspace is None:
        workspace = torch.empty(workspace_bytes(num_images, k), dtype=torch.uint8, device=device)
    bits = workspace[:num_images * k * words * 4].view(torch.int32)
    counts = count.to(torch.int32)
    _overlap_bits[(triton.cdiv(k, BLOCK_I), words, num_images)](
        cand_boxes, label.to(torch.int32), counts, bits, k, words, float(iou_threshold), BLOCK_I=BLOCK_I)
    _greedy_scan[(num_images,)](bits, counts, cand_boxes, cand_scores, label, box_index, dets, labels, index, k,
                                words, keep_topk, WORDS=triton.next_power_of_2(words))
    return dets, labels, index
