"""From a detector's candidate boxes to padded ``(dets, labels)`` through the batched NMS op.

torchvision's post-processing runs ``batched_nms`` over a list of (box, score, label)
candidates whose length depends on the data. In the graph every (box, class) pair has a
slot in a fixed-size score tensor [N, B, C]; pairs torchvision would not pass to NMS get
``INVALID_SCORE``, which is below every threshold, so per-class NMS over that tensor keeps
exactly what ``batched_nms`` keeps.
"""
from __future__ import annotations

import torch

INVALID_SCORE = -1.0


def post_processing(cfg) -> dict:
    """MMDeploy's ``codebase_config.post_processing`` of the config being exported."""
    codebase = getattr(cfg, "codebase", None) or {}
    return dict(codebase.get("post_processing") or {})


def class_scores(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Spread per-candidate scores [N, K] with their labels into [N, K, C]; invalid slots get INVALID_SCORE."""
    classes = torch.arange(num_classes, device=labels.device)
    keep = (labels.unsqueeze(-1) == classes) & valid.unsqueeze(-1)
    return torch.where(keep, scores.unsqueeze(-1), torch.full_like(scores.unsqueeze(-1), INVALID_SCORE))


def padded_detections(ctx, boxes: torch.Tensor, scores: torch.Tensor, *, score_threshold: float,
                      iou_threshold: float, keep_top_k: int, max_candidates: int,
                      configured: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class NMS over ``boxes`` [N, B, 1 or C, 4] and ``scores`` [N, B, C] -> dets [N, K, 5], labels [N, K].

    ``max_candidates`` bounds the valid (box, class) pairs; the config's ``pre_top_k`` may cap
    it further (torchvision has no such cap, so results agree while candidates <= pre_top_k).
    ``configured=False`` (the RPN) ignores the config: MMDeploy's post_processing is for the final boxes.
    """
    from ...ops.batched_nms import multiclass_nms

    settings = post_processing(ctx.cfg) if configured else {}
    cap = int(settings.get("pre_top_k", -1))  # MMDeploy: -1 (or 0) means no cap
    pre_top_k = min(int(max_candidates), cap) if cap > 0 else int(max_candidates)
    return multiclass_nms(boxes, scores, iou_threshold=float(iou_threshold), score_threshold=float(score_threshold),
                          pre_top_k=pre_top_k, keep_top_k=int(keep_top_k),
                          background_label_id=int(settings.get("background_label_id", -1)))
