"""TRTBatchedNMS on the GPU, all three steps of ``reference.py`` in Triton, for every image at once.

No host synchronisation and no allocation when the caller passes ``workspace`` and ``out`` (the
plugin passes TensorRT's), so a call can be captured in a CUDA graph. Launches:

1. candidate selection, an exact radix select over each image's (box, class) pairs. Every pair
   with score > threshold (and not the background class) gets a unique 64-bit key, ``score``'s
   order-preserving bits above ``(pairs - 1 - pair index)``, so a larger key means "ranks first"
   exactly as a stable descending sort does. ``_radix_pass`` histograms 9 bits of the keys per
   launch (the keys that agree with the bits settled so far); each program re-derives the settled
   bits from the earlier histograms (512 bins, cheap), so no launch settles them alone. The pass
   that finds the ``topk``-th key alone ends the search (later passes return at once).
2. ``_compact`` writes the keys >= that ``topk``-th key (in no particular order) and
   ``_rank_gather`` ranks them by counting larger keys (they are unique), then writes the ranked
   candidates' boxes, scores, classes and box indices.
3. ``_overlap_bits``: bit j of word w of row i is set when candidate 32*w+j ranks after i, has its
   class and overlaps it by IoU > threshold (tiles left of the diagonal are skipped: the scan
   never reads them). ``_greedy_scan``: one program per image walks its ranked candidates 32 at a
   time, settles each chunk with register-only bit operations, writes the kept candidates to the
   next output rows and ORs their rows into the running "removed" words; it stops once
   ``keep_topk`` are kept, then writes the padding rows (dets 0, label -1, index -1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .workspace import BINS, DIGIT, Workspace, candidates, workspace_bytes

__all__ = ["batched_nms", "workspace_bytes"]

BLOCK_I = 32     # rows of a bitmask tile = candidates the scan settles at once (one int32 word)
SELECT_BLOCK = 4096  # pairs per program in the selection passes
RANK_BLOCK = 64


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
def _settled(hist, n, k, PASSES: tl.constexpr, TOTAL_BITS: tl.constexpr, NUM_PASSES: tl.constexpr,
             DIGIT: tl.constexpr, BINS: tl.constexpr):
    """From the first ``PASSES`` histograms: the settled key prefix, how many keys it must still supply, done?

    When done, every candidate with key >= ``prefix << low bit of the last settled digit`` is selected.
    """
    bins = tl.arange(0, BINS)
    prefix = tl.zeros((), dtype=tl.int64)
    need = tl.zeros((), dtype=tl.int32)
    done = tl.zeros((), dtype=tl.int1)
    for q in tl.static_range(PASSES):
        high = TOTAL_BITS - DIGIT * q
        low = (high - DIGIT) * (high > DIGIT)  # (constants: the loop is unrolled)
        h = tl.load(hist + (n * NUM_PASSES + q) * BINS + bins)
        total = tl.sum(h, 0)
        if q == 0:
            need = tl.minimum(total, k)  # fewer candidates than topk: the lowest bin's keys end the search
        above = total - tl.cumsum(h, 0)  # keys in higher bins
        digit = tl.sum((above >= need).to(tl.int32), 0)  # the bin holding the need-th key
        at_digit = tl.sum(tl.where(bins == digit, h, 0), 0)
        still = need - tl.sum(tl.where(bins == digit, above, 0), 0)
        new_prefix = (prefix << (high - low)) | digit.to(tl.int64)
        prefix = tl.where(done, prefix << (high - low), new_prefix)
        need = tl.where(done, need, still)
        done = done | (at_digit == still)
    return prefix, need, done


@triton.jit
def _radix_pass(scores, hist, pairs, num_classes, k, score_threshold, background_label_id,
                INDEX_BITS: tl.constexpr, PASS: tl.constexpr, NUM_PASSES: tl.constexpr, DIGIT: tl.constexpr,
                BINS: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    TOTAL_BITS: tl.constexpr = 32 + INDEX_BITS
    prefix, need, done = _settled(hist, n, k, PASS, TOTAL_BITS, NUM_PASSES, DIGIT, BINS)
    if done == 0:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        key, passing = _pair_keys(scores, n, offs, pairs, num_classes, score_threshold, background_label_id,
                                  INDEX_BITS)
        high: tl.constexpr = TOTAL_BITS - DIGIT * PASS
        low: tl.constexpr = (high - DIGIT) * (high > DIGIT)
        match = passing & ((key >> high) == prefix)
        digit = tl.where(match, (key >> low) & ((1 << (high - low)) - 1), 0).to(tl.int32)
        h = tl.histogram(digit, BINS)
        bins = tl.arange(0, BINS)
        h -= tl.where(bins == 0, BLOCK - tl.sum(match.to(tl.int32), 0), 0)  # the non-matching keys went to bin 0
        tl.atomic_add(hist + (n * NUM_PASSES + PASS) * BINS + bins, h, mask=h > 0)


@triton.jit
def _compact(scores, hist, counter, cand_keys, pairs, num_classes, k, score_threshold, background_label_id,
             INDEX_BITS: tl.constexpr, NUM_PASSES: tl.constexpr, DIGIT: tl.constexpr, BINS: tl.constexpr,
             BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    TOTAL_BITS: tl.constexpr = 32 + INDEX_BITS
    prefix, need, done = _settled(hist, n, k, NUM_PASSES, TOTAL_BITS, NUM_PASSES, DIGIT, BINS)
    LAST_HIGH: tl.constexpr = TOTAL_BITS - DIGIT * (NUM_PASSES - 1)
    low: tl.constexpr = (LAST_HIGH - DIGIT) * (LAST_HIGH > DIGIT)
    threshold = prefix << low
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    key, passing = _pair_keys(scores, n, offs, pairs, num_classes, score_threshold, background_label_id, INDEX_BITS)
    chosen = passing & (key >= threshold)
    taken = tl.sum(chosen.to(tl.int32), 0)
    if taken > 0:
        first = tl.atomic_add(counter + n, taken)
        slot = first + tl.cumsum(chosen.to(tl.int32), 0) - 1
        tl.store(cand_keys + n * k + slot, key, mask=chosen)


@triton.jit
def _rank_gather(cand_keys, counter, scores, boxes, cand_boxes, cand_scores, cand_labels, cand_index, pairs,
                 num_boxes, num_classes, box_classes, k, INDEX_BITS: tl.constexpr, CLIP: tl.constexpr,
                 BLOCK: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    count = tl.load(counter + n)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < count
    key = tl.load(cand_keys + n * k + rows, mask=row_ok, other=0)
    rank = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, count, BLOCK_J):
        cols = start + tl.arange(0, BLOCK_J)
        other = tl.load(cand_keys + n * k + cols, mask=cols < count, other=-1)
        rank += tl.sum((other[None, :] > key[:, None]).to(tl.int32), 1)
    pair = (1 << INDEX_BITS) - 1 - (key & ((1 << INDEX_BITS) - 1))
    box = pair // num_classes
    label = (pair % num_classes).to(tl.int32)
    dst = n * k + rank
    src = ((n * num_boxes + box) * box_classes + label % box_classes) * 4
    for j in tl.static_range(4):
        coord = tl.load(boxes + src + j, mask=row_ok)
        if CLIP:
            coord = tl.minimum(tl.maximum(coord, 0.0), 1.0)
        tl.store(cand_boxes + dst * 4 + j, coord, mask=row_ok)
    tl.store(cand_scores + dst, tl.load(scores + n * pairs + pair, mask=row_ok), mask=row_ok)
    tl.store(cand_labels + dst, label, mask=row_ok)
    tl.store(cand_index + dst, box.to(tl.int32), mask=row_ok)


@triton.jit
def _overlap_bits(boxes, labels, counts, bits, k, words, iou_threshold, BLOCK_I: tl.constexpr):
    row_block = tl.program_id(0)
    word = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    count = tl.load(counts + n)
    if (word >= row_block) & (row_block * BLOCK_I < count):  # the scan reads only these tiles
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
        tl.store(bits + (n * k + rows) * words + word, packed, mask=row_ok)


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _greedy_scan(bits, counts, boxes, scores, labels, box_index, dets, out_labels, out_index, k, words, keep_topk,
                 WORDS: tl.constexpr, PAD_BLOCK: tl.constexpr):
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
        # words left of the chunk were never written (_overlap_bits skips them) and are never read
        tile = tl.load(bits + (n * k + rows)[:, None] * words + lanes[None, :],
                       mask=valid[:, None] & (lanes < words)[None, :] & (lanes >= chunk)[None, :], other=0)
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
        tl.store(out_labels + dst, tl.load(labels + src, mask=kept).to(tl.int64), mask=kept)
        tl.store(out_index + dst, tl.load(box_index + src, mask=kept).to(tl.int64), mask=kept)
        removed = removed | tl.reduce(tl.where(kept[:, None], tile, 0), 0, _or)
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
    pad_block = min(triton.next_power_of_2(keep_topk), 1024)
    if num_images == 0:
        return dets, labels, index
    if k == 0:
        _pad_all[(num_images,)](dets, labels, index, keep_topk, PAD_BLOCK=pad_block)
        return dets, labels, index
    scores = scores.float().contiguous()
    boxes = boxes.float().contiguous()
    layout = Workspace(num_images, pairs, k)
    if workspace is None:
        workspace = torch.empty(layout.nbytes, dtype=torch.uint8, device=device)
    ws = layout.views(workspace)
    workspace[:layout.zeroed].zero_()
    select = dict(INDEX_BITS=layout.index_bits, NUM_PASSES=layout.num_passes, DIGIT=DIGIT, BINS=BINS,
                  BLOCK=SELECT_BLOCK)
    grid = (triton.cdiv(pairs, SELECT_BLOCK), num_images)
    args = (pairs, num_classes, k, float(score_threshold), int(background_label_id))
    for step in range(layout.num_passes):
        _radix_pass[grid](scores, ws["hist"], *args, PASS=step, num_warps=8, **select)
    _compact[grid](scores, ws["hist"], ws["counter"], ws["keys"], *args, num_warps=8, **select)
    _rank_gather[(triton.cdiv(k, RANK_BLOCK), num_images)](
        ws["keys"], ws["counter"], scores, boxes, ws["boxes"], ws["scores"], ws["labels"], ws["index"], pairs,
        num_boxes, num_classes, boxes.shape[2], k, INDEX_BITS=layout.index_bits, CLIP=bool(clip_boxes),
        BLOCK=RANK_BLOCK, BLOCK_J=128, num_warps=4)
    words = layout.words
    _overlap_bits[(triton.cdiv(k, BLOCK_I), words, num_images)](
        ws["boxes"], ws["labels"], ws["counter"], ws["bits"], k, words, float(iou_threshold), BLOCK_I=BLOCK_I)
    _greedy_scan[(num_images,)](ws["bits"], ws["counter"], ws["boxes"], ws["scores"], ws["labels"], ws["index"], dets,
                                labels, index, k, words, keep_topk, WORDS=triton.next_power_of_2(words),
                                PAD_BLOCK=pad_block)
    return dets, labels, index
