"""Batched multi-class NMS (``mmdeploy::TRTBatchedNMS``) in pure PyTorch, in the kernel's three steps.

The semantics are ``function.py``'s; per image:
1. ``select_candidates``: the (box, class) pairs with score > ``score_threshold`` and class !=
   ``background_label_id``, best first (stable: equal scores keep ``box * C + class`` order),
   at most ``topk`` of them over all classes.
2. suppression: a candidate is dropped when its IoU (torchvision's, no +1 pixel) with a
   higher-ranked kept candidate of the same class is > ``iou_threshold``. ``kernel.py`` does
   this on the GPU with an IoU bitmask and a chunked scan; ``suppress_reference`` does it here.
   Both stop once ``keep_topk`` candidates are kept: later ones cannot reach the output.
3. ``assemble``: the kept candidates in rank order, the first ``keep_topk``; rows past them
   have dets = 0, label -1 and index -1 (so the per-image count is ``(labels >= 0).sum(1)``).

Steps 1 and 3 are shared by the GPU kernel and the ONNX Runtime implementation, so every
route orders and pads identically.
"""
from __future__ import annotations

import torch


def _rank_keys(flat: torch.Tensor, passing: torch.Tensor) -> torch.Tensor:
    """int64 keys that order (score desc, index asc) like a stable descending sort; non-candidates lowest.

    A top-k over unique keys is much faster than a stable sort of every (box, class) pair.
    """
    bits = flat.contiguous().view(torch.int32).long()
    monotonic = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # float order as integer order
    index = torch.arange(flat.shape[1], device=flat.device)
    keys = monotonic * (1 << 32) + ((1 << 32) - 1 - index)
    return torch.where(passing, keys, torch.iinfo(torch.int64).min)


def select_candidates(boxes: torch.Tensor, scores: torch.Tensor, *, topk: int, score_threshold: float,
                      background_label_id: int, clip_boxes: bool):
    """boxes [N, B, 1 or C, 4], scores [N, B, C] -> each image's candidates, best first.

    Returns boxes [N, K, 4], scores [N, K] (-inf past the candidates), class [N, K],
    box index [N, K] and the number of candidates [N].
    """
    num_images, num_boxes, num_classes = scores.shape
    flat = scores.float().reshape(num_images, num_boxes * num_classes)
    k = min(topk, flat.shape[1]) if topk > 0 else flat.shape[1]
    passing = flat > score_threshold
    if 0 <= background_label_id < num_classes:
        passing.view(num_images, num_boxes, num_classes)[:, :, background_label_id] = False
    order = torch.topk(_rank_keys(flat, passing), k, dim=1, sorted=True).indices
    ranked = torch.where(passing.gather(1, order), flat.gather(1, order), float("-inf"))
    box_index, label = order // num_classes, order % num_classes
    if clip_boxes:
        boxes = boxes.clamp(0.0, 1.0)
    box_class = label % boxes.shape[2]  # 0 when boxes are shared by all classes
    cand_boxes = boxes.float()[torch.arange(num_images, device=scores.device)[:, None], box_index, box_class]
    count = passing.sum(1).clamp(max=k)
    return cand_boxes, ranked, label, box_index, count


def iou_matrix(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes [K, 4] -> [K, K], computed as torchvision does."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, None] + area[None, :] - inter)


def suppress_reference(cand_boxes: torch.Tensor, label: torch.Tensor, count: torch.Tensor, iou_threshold: float,
                       keep_topk: int) -> torch.Tensor:
    """Greedy class-aware NMS over each image's ranked candidates -> keep [N, K] (bool)."""
    keep = torch.zeros(cand_boxes.shape[:2], dtype=torch.bool, device=cand_boxes.device)
    for n in range(cand_boxes.shape[0]):
        m = int(count[n])
        same_class = label[n, :m, None] == label[n, None, :m]
        overlaps = torch.triu((iou_matrix(cand_boxes[n, :m]) > iou_threshold) & same_class, diagonal=1)
        removed = torch.zeros(m, dtype=torch.bool, device=cand_boxes.device)
        kept = 0
        for i in range(m):
            if kept == keep_topk:
                break
            if not removed[i]:
                keep[n, i] = True
                kept += 1
                removed |= overlaps[i]
    return keep


def assemble(cand_boxes: torch.Tensor, cand_scores: torch.Tensor, label: torch.Tensor, box_index: torch.Tensor,
             keep: torch.Tensor, keep_topk: int, label_dtype: torch.dtype = torch.int64):
    """The first ``keep_topk`` kept candidates of each image -> dets [N, T, 5], labels [N, T], index [N, T]."""
    num_images, k = keep.shape
    slot = torch.where(keep, keep.long().cumsum(1) - 1, keep_topk)  # output row of each kept candidate
    slot = slot.clamp(max=keep_topk)
    dets = cand_scores.new_zeros(num_images, keep_topk + 1, 5)
    labels = torch.full((num_images, keep_topk + 1), -1, dtype=label_dtype, device=keep.device)
    index = torch.full_like(labels, -1)
    rows = torch.arange(num_images, device=keep.device)[:, None].expand(-1, k)
    dets[rows, slot] = torch.cat([cand_boxes, cand_scores[..., None]], 2)
    labels[rows, slot] = label.to(label_dtype)
    index[rows, slot] = box_index.to(label_dtype)
    # row keep_topk collected everything not kept (or past the first keep_topk); drop it
    return dets[:, :keep_topk].contiguous(), labels[:, :keep_topk].contiguous(), index[:, :keep_topk].contiguous()


def batched_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, *, topk: int, keep_topk: int,
                          score_threshold: float, iou_threshold: float, background_label_id: int = -1,
                          clip_boxes: bool = False):
    """TRTBatchedNMS with the reference suppression -> (dets, labels, index)."""
    cand_boxes, cand_scores, label, box_index, count = select_candidates(
        boxes, scores, topk=topk, score_threshold=score_threshold, background_label_id=background_label_id,
        clip_boxes=clip_boxes)
    keep = suppress_reference(cand_boxes, label, count, iou_threshold, keep_topk)
    return assemble(cand_boxes, cand_scores, label, box_index, keep, keep_topk)
