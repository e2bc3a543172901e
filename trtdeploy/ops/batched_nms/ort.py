"""``mmdeploy::TRTBatchedNMS`` on ONNX Runtime: the reference steps with torchvision's NMS on the CPU.

Suppression runs ``torchvision.ops.nms`` once per class of an image on that class's ranked
candidates, with the rank as the score, so equal scores keep the rank order of
``reference.select_candidates`` and the result equals the kernel's exactly.
"""
from __future__ import annotations

import torch

from ..ort_ops import OrtKernel
from .reference import assemble, select_candidates


def suppress_torchvision(cand_boxes: torch.Tensor, label: torch.Tensor, count: torch.Tensor, iou_threshold: float,
                         keep_topk: int) -> torch.Tensor:
    """Greedy class-aware NMS over each image's ranked candidates -> keep [N, K] (bool)."""
    from torchvision.ops import nms

    keep = torch.zeros(cand_boxes.shape[:2], dtype=torch.bool, device=cand_boxes.device)
    for n in range(cand_boxes.shape[0]):
        m = int(count[n])
        rank = -torch.arange(m, dtype=torch.float32, device=cand_boxes.device)
        for c in label[n, :m].unique():
            members = (label[n, :m] == c).nonzero().flatten()
            keep[n, members[nms(cand_boxes[n, members], rank[members], iou_threshold)]] = True
        keep[n, keep[n].cumsum(0) > keep_topk] = False  # only the first keep_topk reach the output
    return keep


def compute(values: dict, boxes, scores):
    cand_boxes, cand_scores, label, box_index, count = select_candidates(
        torch.from_numpy(boxes), torch.from_numpy(scores), topk=values["topk"],
        score_threshold=values["score_threshold"], background_label_id=values["background_label_id"],
        clip_boxes=bool(values["clip_boxes"]))
    keep = suppress_torchvision(cand_boxes, label, count, values["iou_threshold"], values["keep_topk"])
    return [t.numpy() for t in assemble(cand_boxes, cand_scores, label, box_index, keep, values["keep_topk"])]


KERNEL = OrtKernel(2, ("float32", "int64", "int64"), compute)
