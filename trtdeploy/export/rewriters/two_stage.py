"""Faster / Mask R-CNN: region proposals, box head and mask head as fixed-size batched graphs.

The RPN keeps ``post_nms_top_n`` proposals per image (padded ones are marked invalid), the
box head runs on all of them and the final per-class NMS ignores the padded ones; the mask
head runs on the ``keep_top_k`` detections. RoI pooling goes through the multi-level
RoIAlign op, NMS through the batched NMS op.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import _filter_input, _setup_scales

from ..rewriter import FUNCTION_REWRITER
from .candidates import INVALID_SCORE, padded_detections


class Proposals(NamedTuple):
    """What the rewritten RPN hands the rewritten RoI heads: boxes [N, P, 4], which are real, and P."""

    boxes: torch.Tensor
    valid: torch.Tensor
    count: int


def _big_enough(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def _rois(boxes: torch.Tensor) -> torch.Tensor:
    """[N, K, 4] boxes -> [N*K, 5] RoIs (batch index, x1, y1, x2, y2)."""
    index = torch.arange(boxes.shape[0], device=boxes.device, dtype=boxes.dtype)
    index = index.view(-1, 1, 1).expand(-1, boxes.shape[1], 1)
    return torch.cat([index, boxes], dim=2).reshape(-1, 5)


@FUNCTION_REWRITER.register("torchvision.models.detection.rpn.RegionProposalNetwork.forward")
def rpn_forward(ctx, self, images, features, targets=None):
    features = list(features.values())
    objectness, deltas = self.head(features)
    anchors = self.anchor_generator(images, features)[0]  # the same anchors for every image of the batch
    per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
    num_images = features[0].shape[0]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    objectness = objectness.reshape(num_images, -1)
    deltas = deltas.reshape(num_images, -1, 4)

    # torchvision: top pre_nms_top_n per level, decode, clip, drop small and low boxes, NMS per level, then the
    # post_nms_top_n best survivors. One NMS per level keeps every NMS (and its TopK) at pre_nms_top_n candidates.
    top_n, keep_n = self.pre_nms_top_n(), self.post_nms_top_n()
    image_shape = images.image_sizes[0]
    survivors = []
    for obj, delta, anchor in zip(objectness.split(per_level, 1), deltas.split(per_level, 1), anchors.split(per_level, 0)):
        top, idx = obj.topk(det_utils._topk_min(obj, top_n, 1), dim=1)
        picked = delta.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
        boxes = self.box_coder.decode_single(picked.reshape(-1, 4), anchor[idx].reshape(-1, 4)).reshape(picked.shape)
        boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
        scores = torch.sigmoid(top)
        valid = _big_enough(boxes, self.min_size) & (scores >= self.score_thresh)
        scores = torch.where(valid, scores, torch.full_like(scores, INVALID_SCORE))
        survivors.append(padded_detections(ctx, boxes.unsqueeze(2), scores.unsqueeze(-1),
                                           score_threshold=INVALID_SCORE / 2,  # `valid` applied torchvision's >=
                                           iou_threshold=self.nms_thresh, keep_top_k=keep_n,
                                           max_candidates=top_n, configured=False))
    dets = torch.cat([d for d, _ in survivors], dim=1)
    found = torch.cat([labels for _, labels in survivors], dim=1) >= 0
    ranked = torch.where(found, dets[..., 4], torch.full_like(dets[..., 4], INVALID_SCORE))
    best, order = ranked.topk(keep_n, dim=1)
    boxes = dets[..., :4].gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    return Proposals(boxes, best > INVALID_SCORE, keep_n), {}


@FUNCTION_REWRITER.register("torchvision.ops.poolers.MultiScaleRoIAlign.forward")
def multiscale_roi_align_forward(ctx, self, x, boxes, image_shapes):
    """Takes RoIs [R, 5] (batch index first) instead of a list of boxes per image."""
    from ...ops.multi_level_roi_align import multi_level_roi_align

    features = _filter_input(x, self.featmap_names)
    if self.scales is None or self.map_levels is None:
        self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                     self.canonical_level)
    return multi_level_roi_align(features, boxes, output_size=self.output_size,
                                 featmap_strides=[round(1 / s) for s in self.scales],
                                 sampling_ratio=self.sampling_ratio, aligned=False,
                                 canonical_scale=self.canonical_scale, canonical_level=self.canonical_level)


@FUNCTION_REWRITER.register("torchvision.models.detection.roi_heads.RoIHeads.forward")
def roi_heads_forward(ctx, self, features, proposals, image_shapes, targets=None):
    num_images, num_proposals = proposals.boxes.shape[:2]
    rois = _rois(proposals.boxes)
    class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, rois, image_shapes)))
    num_classes = class_logits.shape[-1]
    boxes = self.box_coder.decode_single(box_regression, rois[:, 1:]).reshape(num_images, num_proposals, num_classes, 4)
    boxes = box_ops.clip_boxes_to_image(boxes, image_shapes[0])
    scores = torch.softmax(class_logits, -1).reshape(num_images, num_proposals, num_classes)
    # torchvision: drop the background class, low scores and boxes under 1e-2 px, then NMS per class.
    foreground = torch.arange(num_classes, device=scores.device) > 0
    valid = (scores > self.score_thresh) & _big_enough(boxes, 1e-2) & proposals.valid.unsqueeze(-1) & foreground
    per_class = torch.where(valid, scores, torch.full_like(scores, INVALID_SCORE))
    dets, labels = padded_detections(ctx, boxes, per_class, score_threshold=self.score_thresh,
                                     iou_threshold=self.nms_thresh, keep_top_k=self.detections_per_img,
                                     max_candidates=proposals.count * (num_classes - 1))
    outputs = [dets, labels]
    if self.has_mask():
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, _rois(dets[..., :4]), image_shapes)))
        picked = labels.clamp(min=0).reshape(-1, 1, 1, 1).expand(-1, 1, *mask_logits.shape[-2:])
        outputs.append(mask_logits.gather(1, picked).sigmoid().reshape(num_images, -1, *mask_logits.shape[-2:]))
    if self.has_keypoint():
        outputs.append(_keypoints(self, features, dets[..., :4], image_shapes))
    return tuple(outputs), {}


def _keypoints(self, features, boxes: torch.Tensor, image_shapes) -> torch.Tensor:
    """Keypoint R-CNN on the kept boxes [N, K, 4] -> [N, K, P, 3] (x, y, heatmap logit at the peak).

    The peak is the arg-max of each M x M heatmap, its cell centre mapped into the box. torchvision first resizes
    every heatmap (bicubic) to its own box size, a per-box shape no fixed-size graph has (its ONNX form, a Loop
    that grows its outputs, TensorRT cannot build). A heatmap with one clear peak (a trained model's) lands within
    a heatmap cell (box size / M) of torchvision's; a flat one (random weights) may peak elsewhere.
    """
    logits = self.keypoint_predictor(self.keypoint_head(self.keypoint_roi_pool(features, _rois(boxes), image_shapes)))
    size = logits.shape[-1]
    peak, where = logits.flatten(2).max(dim=-1)  # [R, P]
    flat = boxes.reshape(-1, 1, 4)
    wh = (flat[..., 2:] - flat[..., :2]).clamp(min=1)
    cell = torch.stack([where % size, torch.div(where, size, rounding_mode="floor")], dim=-1).to(boxes.dtype)
    xy = flat[..., :2] + (cell + 0.5) / size * wh
    return torch.cat([xy, peak.unsqueeze(-1)], dim=-1).reshape(*boxes.shape[:2], -1, 3)
