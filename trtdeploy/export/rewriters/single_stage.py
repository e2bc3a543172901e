"""RetinaNet, FCOS and SSD post-processing as fixed-size batched graphs.

Same algorithm as torchvision's ``postprocess_detections`` (score threshold, top-k
candidates, box decoding, clipping, per-class NMS, ``detections_per_img``), with the
candidate lists replaced by fixed-size tensors (see candidates.py).
"""
from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import boxes as box_ops

from ..rewriter import FUNCTION_REWRITER
from .candidates import INVALID_SCORE, class_scores, padded_detections


def _level_candidates(scores: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, topk: int):
    """The ``topk`` best (anchor, class) pairs of one level: scores, labels, their deltas and anchors.

    scores [N, A, C], deltas [N, A, 4], anchors [A, 4] (shared by the batch).
    """
    num_classes = scores.shape[-1]
    flat = scores.flatten(1)
    top_scores, idx = flat.topk(det_utils._topk_min(flat, topk, 1), dim=1)
    anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
    labels = idx % num_classes
    picked = deltas.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, deltas.shape[-1]))
    return top_scores, labels, picked, anchors[anchor_idx]


def _dense_detections(ctx, self, level_scores, deltas, anchors, image_shape, decode):
    """Shared tail of RetinaNet and FCOS: per-level top-k, decode, clip, threshold, NMS."""
    parts = [_level_candidates(s, d, a, self.topk_candidates) for s, d, a in zip(level_scores, deltas, anchors)]
    scores, labels, picked, picked_anchors = (torch.cat(p, dim=1) for p in zip(*parts))
    boxes = box_ops.clip_boxes_to_image(decode(picked, picked_anchors), image_shape)
    num_classes = level_scores[0].shape[-1]
    per_class = class_scores(scores, labels, scores > self.score_thresh, num_classes)
    return padded_detections(ctx, boxes.unsqueeze(2), per_class, score_threshold=self.score_thresh,
                             iou_threshold=self.nms_thresh, keep_top_k=self.detections_per_img,
                             max_candidates=len(parts) * self.topk_candidates)


@FUNCTION_REWRITER.register("torchvision.models.detection.retinanet.RetinaNet.postprocess_detections")
def retinanet_postprocess_detections(ctx, self, head_outputs, anchors, image_shapes):
    def decode(deltas, anchors):
        return self.box_coder.decode_single(deltas.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(deltas.shape)

    scores = [torch.sigmoid(logits) for logits in head_outputs["cls_logits"]]
    return _dense_detections(ctx, self, scores, head_outputs["bbox_regression"], anchors[0], image_shapes[0], decode)


@FUNCTION_REWRITER.register("torchvision.models.detection.fcos.FCOS.postprocess_detections")
def fcos_postprocess_detections(ctx, self, head_outputs, anchors, image_shapes):
    scores = [torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(ctrness))
              for logits, ctrness in zip(head_outputs["cls_logits"], head_outputs["bbox_ctrness"])]
    return _dense_detections(ctx, self, scores, head_outputs["bbox_regression"], anchors[0], image_shapes[0],
                             self.box_coder.decode)


@FUNCTION_REWRITER.register("torchvision.models.detection.anchor_utils.DefaultBoxGenerator.forward")
def default_box_generator_forward(ctx, self, image_list, feature_maps):
    """SSD's default boxes from the traced image and feature sizes (torchvision bakes them into constants).

    Returns one anchor set: the images of a batch share their size.
    """
    dtype, device = feature_maps[0].dtype, feature_maps[0].device
    image_hw = torch._shape_as_tensor(image_list.tensors)[-2:].to(dtype)
    centers, sizes = [], []
    for k, fmap in enumerate(feature_maps):
        grid_hw = torch._shape_as_tensor(fmap)[-2:]
        steps_hw = image_hw / self.steps[k] if self.steps is not None else grid_hw.to(dtype)
        shift_y = (torch.arange(grid_hw[0], device=device).to(dtype) + 0.5) / steps_hw[0]
        shift_x = (torch.arange(grid_hw[1], device=device).to(dtype) + 0.5) / steps_hw[1]
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        pairs = self._wh_pairs[k].clamp(min=0, max=1) if self.clip else self._wh_pairs[k]
        cells = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1)
        centers.append(cells.unsqueeze(1).expand(-1, len(pairs), 2).reshape(-1, 2))
        sizes.append(pairs.to(device, dtype).unsqueeze(0).expand(cells.shape[0], -1, -1).reshape(-1, 2))
    centers, sizes = torch.cat(centers), torch.cat(sizes)
    image_wh = image_hw.flip(0)
    return [torch.cat(((centers - 0.5 * sizes) * image_wh, (centers + 0.5 * sizes) * image_wh), dim=-1)]


@FUNCTION_REWRITER.register("torchvision.models.detection.ssd.SSD.postprocess_detections")
def ssd_postprocess_detections(ctx, self, head_outputs, image_anchors, image_shapes):
    deltas = head_outputs["bbox_regression"]
    scores = torch.softmax(head_outputs["cls_logits"], dim=-1)
    anchors = image_anchors[0].unsqueeze(0).expand_as(deltas)
    boxes = self.box_coder.decode_single(deltas.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(deltas.shape)
    boxes = box_ops.clip_boxes_to_image(boxes, image_shapes[0])
    # torchvision keeps, per class, the top-k anchors above the threshold; class 0 is the background.
    num_classes = scores.shape[-1]
    by_class = scores.transpose(1, 2)
    _, top_idx = by_class.topk(det_utils._topk_min(by_class, self.topk_candidates, 2), dim=2)
    in_top = torch.zeros_like(by_class).scatter(2, top_idx, 1.0).transpose(1, 2) > 0
    foreground = torch.arange(num_classes, device=scores.device) > 0
    valid = in_top & (scores > self.score_thresh) & foreground
    per_class = torch.where(valid, scores, torch.full_like(scores, INVALID_SCORE))
    return padded_detections(ctx, boxes.unsqueeze(2), per_class, score_threshold=self.score_thresh,
                             iou_threshold=self.nms_thresh, keep_top_k=self.detections_per_img,
                             max_candidates=(num_classes - 1) * self.topk_candidates)
