"""Batched multi-class NMS as one graph node, ``mmdeploy::TRTBatchedNMS``.

Semantics (eager, exported node, plugin-free lowering and plugins all compute this), per image:

1. candidates are the (box, class) pairs with ``score > score_threshold`` and
   ``class != background_label_id``;
2. ``pre_top_k > 0`` keeps the ``pre_top_k`` highest-scoring candidates of the image (over all
   classes together, like torchvision's ``topk_candidates``; ties: lower ``box * C + class`` first);
3. class-aware greedy NMS exactly as ``torchvision.ops.batched_nms`` (coordinate-offset trick):
   a candidate is dropped if its IoU with a kept, higher-ranked candidate of its class is
   ``> iou_threshold``;
4. the first ``keep_top_k`` survivors, by decreasing score, fill ``dets [N, keep_top_k, 5]``
   (x1, y1, x2, y2, score) and ``labels [N, keep_top_k]`` (int64); padding rows are all-zero
   dets with label -1, so the count per image is ``(labels >= 0).sum(1)``. With ``return_index``
   a third output ``[N, keep_top_k]`` (int64) holds each detection's box index (-1 for padding).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms  # imported before any trace: its import fails inside one

from ...errors import ConfigError
from . import OP



def _check(scores: Tensor, boxes: Tensor, iou_threshold: float, keep_top_k: int) -> None:
    if scores.dim() != 3 or boxes.dim() not in (3, 4) or boxes.shape[-1] != 4 or boxes.shape[:2] != scores.shape[:2]:
        raise ConfigError(f"multiclass_nms needs boxes [N, B, 4] or [N, B, C, 4] and scores [N, B, C], got boxes "
                          f"{list(boxes.shape)} and scores {list(scores.shape)}; fix the rewriter that calls it")
    if keep_top_k <= 0:
        raise ConfigError(f"post_processing.keep_top_k must be > 0 (the fixed number of output rows), got {keep_top_k}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ConfigError(f"post_processing.iou_threshold must be within [0, 1], got {iou_threshold}")


def multiclass_nms_reference(boxes: Tensor, scores: Tensor, *, iou_threshold: float, score_threshold: float,
                             pre_top_k: int, keep_top_k: int, background_label_id: int = -1,
                             return_index: bool = False) -> tuple[Tensor, ...]:
    """The eager result, from ``torchvision.ops.nms`` on offset boxes (torchvision's batched_nms trick)."""
    n_images, n_boxes, n_classes = scores.shape
    per_class_boxes = boxes if boxes.dim() == 4 else boxes.unsqueeze(2)
    dets = scores.new_zeros(n_images, keep_top_k, 5)
    labels = torch.full((n_images, keep_top_k), -1, dtype=torch.int64, device=scores.device)
    index = torch.full_like(labels, -1)
    flat_ids = torch.arange(n_boxes * n_classes, device=scores.device)
    classes_of, boxes_of = flat_ids % n_classes, flat_ids // n_classes
    for i in range(n_images):
        flat = scores[i].reshape(-1)
        ok = (flat > score_threshold) & (classes_of != background_label_id)
        cand = flat_ids[ok]
        cand = cand[torch.sort(flat[cand], descending=True, stable=True).indices]
        if pre_top_k > 0:
            cand = cand[:pre_top_k]
        cls, box_ids = classes_of[cand], boxes_of[cand]
        cand_boxes = per_class_boxes[i, box_ids, cls % per_class_boxes.shape[2]]
        if len(cand):
            offsets = cls.to(cand_boxes) * (cand_boxes.max() + torch.tensor(1).to(cand_boxes))
            keep = nms(cand_boxes + offsets[:, None], flat[cand], iou_threshold)[:keep_top_k]
        else:
            keep = cand
        k = len(keep)
        dets[i, :k, :4] = cand_boxes[keep]
        dets[i, :k, 4] = flat[cand][keep]
        labels[i, :k] = cls[keep]
        index[i, :k] = box_ids[keep]
    return (dets, labels, index) if return_index else (dets, labels)


class TRTBatchedNMS(torch.autograd.Function):
    """Eager: the reference result. Export: the single ``mmdeploy::TRTBatchedNMS`` node."""

    @staticmethod
    def forward(ctx, boxes, scores, num_classes, pre_top_k, keep_top_k, iou_threshold, score_threshold,
                background_label_id, return_index):
        return multiclass_nms_reference(boxes, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                                        pre_top_k=pre_top_k, keep_top_k=keep_top_k,
                                        background_label_id=background_label_id, return_index=return_index)

    @staticmethod
    def symbolic(g, boxes, scores, num_classes, pre_top_k, keep_top_k, iou_threshold, score_threshold,
                 background_label_id, return_index):
        outputs = OP.emit(g, boxes, scores, num_classes=num_classes, background_label_id=background_label_id,
                          iou_threshold=iou_threshold, score_threshold=score_threshold, topk=pre_top_k,
                          keep_topk=keep_top_k, is_normalized=0, clip_boxes=0, return_index=int(return_index),
                          outputs=3 if return_index else 2)
        n_images = scores.type().sizes()[0] if scores.type().sizes() else None
        outputs[0].setType(scores.type().with_sizes([n_images, keep_top_k, 5]))
        for extra in outputs[1:]:  # labels (and box indices)
            extra.setType(scores.type().with_dtype(torch.int64).with_sizes([n_images, keep_top_k]))
        return outputs


def multiclass_nms(boxes: Tensor, scores: Tensor, *, iou_threshold: float, score_threshold: float,
                   pre_top_k: int, keep_top_k: int, background_label_id: int = -1,
                   return_index: bool = False) -> tuple[Tensor, ...]:
    """Batched class-aware NMS with fixed-size outputs: ``(dets, labels[, index])`` (see the module doc).

    ``boxes`` is [N, B, 4] (shared by all classes) or [N, B, C, 4] (one box per class); ``scores`` [N, B, C].
    """
    _check(scores, boxes, iou_threshold, keep_top_k)
    if not torch.onnx.is_in_onnx_export():
        return multiclass_nms_reference(boxes, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                                        pre_top_k=pre_top_k, keep_top_k=keep_top_k,
                                        background_label_id=background_label_id, return_index=return_index)
    boxes = boxes if boxes.dim() == 4 else boxes.unsqueeze(2)
    return TRTBatchedNMS.apply(boxes, scores, int(scores.shape[2]), int(pre_top_k), int(keep_top_k),
                               float(iou_threshold), float(score_threshold), int(background_label_id),
                               bool(return_index))
