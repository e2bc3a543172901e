"""Ultralytics YOLO (v3u/v5u/v8/v9/11/12 Detect and Segment heads, v10/26 end-to-end heads) as one graph.

Rewritten: the heads' ``forward`` (``ultralytics.nn.modules.head.Detect.forward`` and ``Segment.forward``).
In the graph a head decodes its boxes (DFL, anchor points and strides from the traced feature sizes, so H and W
stay dynamic), then

- NMS heads: ``trtdeploy.ops.batched_nms.multiclass_nms`` over every (box, class) pair above ``score_threshold``,
  as ultralytics' ``non_max_suppression(multi_label=True)`` (its validator's setting) keeps them;
- end-to-end heads (one-to-one branch, YOLOv10/YOLO26): TopK only, as the head's own ``postprocess``, then rows at
  or below ``score_threshold`` become padding.

Segment heads add ``masks`` [N, K, H/4, W/4]: the prototype masks are assembled in the graph (each kept
detection's coefficients times the prototypes, sigmoid, zero outside its box, as ultralytics' ``process_mask``),
so the graph never returns prototypes; ``run``/``test`` upsample them to the image (``mask_layout='image'``).
Pre-processing is ultralytics' letterbox: keep the ratio, centre, pad with 114, RGB, divide by 255.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...errors import ModelError
from ..families import DETECTOR_FAMILIES, DetectorFamily
from ..rewriter import FUNCTION_REWRITER
from .candidates import post_processing

HEAD_MODULE = "ultralytics.nn.modules.head"
SUPPORTED_HEADS = ("Detect", "Segment", "v10Detect")  # class names, exactly: subclasses change the outputs
# MMDeploy's post_processing keys and the values ultralytics' validator uses where a config leaves one out.
DEFAULTS = {"score_threshold": 0.001, "iou_threshold": 0.7, "keep_top_k": 300, "pre_top_k": 30000}


def thresholds(settings: dict) -> dict:
    """The post_processing values in effect for a YOLO graph and its eager reference alike."""
    return {key: settings.get(key, default) for key, default in DEFAULTS.items()}


def head_of(model) -> torch.nn.Module:
    return model.model[-1]


def _decode(head, preds: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes [N, A, 4] (x1, y1, x2, y2 in input pixels) and class scores [N, A, C] from the raw head outputs."""
    from ultralytics.utils.tal import dist2bbox, make_anchors

    anchors, strides = (a.transpose(0, 1) for a in make_anchors(preds["feats"], head.stride, 0.5))
    boxes = dist2bbox(head.dfl(preds["boxes"]), anchors.unsqueeze(0), xywh=False, dim=1) * strides
    return boxes.transpose(1, 2), preds["scores"].sigmoid().transpose(1, 2)


def _top_k(head, boxes: torch.Tensor, scores: torch.Tensor, settings: dict):
    """End-to-end heads: the head's own TopK selection; rows at or below the score threshold become padding."""
    k = int(settings["keep_top_k"])
    best = head._grouped_topk(scores.amax(dim=-1), k, 1)[1]
    picked = head._gather(scores, best)
    top, flat = picked.flatten(1).topk(k, dim=1)
    index = head._gather(best, torch.div(flat, head.nc, rounding_mode="floor"))
    valid = top > float(settings["score_threshold"])
    dets = torch.cat([head._gather(boxes, index), top.unsqueeze(-1)], dim=-1) * valid.unsqueeze(-1)
    labels = torch.where(valid, flat % head.nc, torch.full_like(flat, -1))
    return dets, labels, torch.where(valid, index, torch.full_like(index, -1))


def _nms(boxes: torch.Tensor, scores: torch.Tensor, settings: dict):
    from ...ops.batched_nms import multiclass_nms

    cap = int(settings["pre_top_k"])
    pre_top_k = cap if cap > 0 else int(scores.shape[1] * scores.shape[2])
    return multiclass_nms(boxes, scores, iou_threshold=float(settings["iou_threshold"]),
                          score_threshold=float(settings["score_threshold"]), pre_top_k=pre_top_k,
                          keep_top_k=int(settings["keep_top_k"]), return_index=True)


def assemble_masks(coefficients: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """sigmoid(coefficients @ prototypes) zeroed outside each box: [N, K, nm] x [N, nm, h, w] -> [N, K, h, w].

    ``boxes`` [N, K, 4] are in input pixels; ``scale`` maps them onto the prototype grid (ultralytics' crop_mask).
    """
    n, nm, h, w = protos.shape
    masks = torch.bmm(coefficients, protos.reshape(n, nm, -1)).sigmoid().reshape(n, -1, h, w)
    x1, y1, x2, y2 = (boxes * scale).unsqueeze(-1).unsqueeze(-1).unbind(2)
    cols = torch.arange(w, device=protos.device, dtype=boxes.dtype).view(1, 1, 1, -1)
    rows = torch.arange(h, device=protos.device, dtype=boxes.dtype).view(1, 1, -1, 1)
    return masks * ((cols >= x1) & (cols < x2)) * ((rows >= y1) & (rows < y2))


def head_forward(ctx, self, x: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A Detect/Segment head as ``(dets, labels[, masks])``."""
    preds = self.forward_head(x, **(self.one2one if self.end2end else self.one2many))
    settings = thresholds(post_processing(ctx.cfg))
    boxes, scores = _decode(self, preds)
    dets, labels, index = _top_k(self, boxes, scores, settings) if self.end2end else _nms(boxes, scores, settings)
    if "mask_coefficient" not in preds:
        return dets, labels
    protos = self.proto(x[0])
    coefficients = self._gather(preds["mask_coefficient"].transpose(1, 2), index.clamp(min=0))
    scale = protos.shape[-1] / (x[0].shape[-1] * float(self.stride[0]))  # prototype cells per input pixel
    return dets, labels, assemble_masks(coefficients, protos, dets[..., :4], scale)


FUNCTION_REWRITER.register(f"{HEAD_MODULE}.Detect.forward")(head_forward)
FUNCTION_REWRITER.register(f"{HEAD_MODULE}.Segment.forward")(head_forward)


# -- the family -----------------------------------------------------------
def _check(model) -> None:
    head = head_of(model)
    kind = type(head).__name__
    if kind in ("Pose", "Pose26", "OBB", "OBB26"):
        task = "pose (keypoint)" if kind.startswith("Pose") else "oriented-box (obb)"
        raise ModelError(f"{type(model).__name__} is an ultralytics {task} model, which trtdeploy does not export yet; "
                         f"deploy a YOLO detect or segment model (e.g. ultralytics://yolov8n.yaml, yolov8n-seg.yaml)")
    if kind not in SUPPORTED_HEADS or type(head).__module__ != HEAD_MODULE:
        raise ModelError(f"{type(model).__name__} ends in an ultralytics {kind} head, which trtdeploy does not export "
                         f"yet (it exports {', '.join(SUPPORTED_HEADS)} heads and RT-DETR); register a family for it "
                         f"(README: 'Adding a detector family')")


def _configure(model, settings: dict) -> dict:
    applied = thresholds(settings)
    head_of(model).max_det = int(applied["keep_top_k"])  # end-to-end heads keep max_det rows eagerly
    return {k: applied[k] for k in ("score_threshold", "iou_threshold", "keep_top_k")}


def eager_segment_masks(coefficients: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor,
                        image_hw: tuple[int, int]) -> torch.Tensor:
    """ultralytics' process_mask (upsample=False) as probabilities: [k, h, w] at the prototype resolution."""
    from ultralytics.utils.ops import crop_mask

    nm, h, w = protos.shape
    masks = (coefficients @ protos.reshape(nm, -1)).sigmoid().reshape(-1, h, w)
    scale = torch.tensor([w / image_hw[1], h / image_hw[0]] * 2, device=boxes.device)
    return crop_mask(masks, boxes * scale)


def _eager(model, batch: torch.Tensor, post_processing: dict) -> list[dict]:
    """The model's own inference and ultralytics' own NMS (or its end-to-end filter) on a pre-processed batch."""
    from ultralytics.utils.nms import non_max_suppression

    head = head_of(model)
    settings = thresholds(post_processing)
    out = model(batch)[0]
    pred, protos = out if isinstance(out, tuple) else (out, None)
    rows = non_max_suppression(pred, float(settings["score_threshold"]), float(settings["iou_threshold"]),
                               multi_label=True, max_det=int(settings["keep_top_k"]), nc=head.nc,
                               max_nms=int(settings["pre_top_k"]) if settings["pre_top_k"] > 0 else 10 ** 9,
                               end2end=head.end2end)
    results = []
    for i, r in enumerate(rows):
        result = {"boxes": r[:, :4], "scores": r[:, 4], "labels": r[:, 5].long()}
        if protos is not None:
            result["masks"] = eager_segment_masks(r[:, 6:], protos[i], r[:, :4], tuple(batch.shape[-2:]))
        results.append(result)
    return results


def ultralytics_class_names(model) -> list[str] | None:
    names = getattr(model, "names", None)
    if not isinstance(names, dict) or all(str(v) == str(k) for k, v in names.items()):
        return None  # a random-init model names its classes '0', '1', ...
    return [str(names[i]) for i in range(len(names))]


def _rewritten(model) -> list[Callable]:
    return [type(head_of(model)).forward]


def _extra_outputs(model) -> tuple[str, ...]:
    return ("masks",) if type(head_of(model)).__name__ == "Segment" else ()


LETTERBOX: dict[str, Any] = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0], "keep_ratio": True,
                             "center": True, "pad_value": 114.0 / 255.0}

DETECTOR_FAMILIES.add("ultralytics YOLO", DetectorFamily(
    class_path="ultralytics.nn.tasks.DetectionModel", num_classes=lambda m: head_of(m).nc, rewritten=_rewritten,
    configure=_configure, eager=_eager, preprocess=lambda m: dict(LETTERBOX), class_names=ultralytics_class_names,
    extra_outputs=_extra_outputs, check=_check, mask_layout="image",
    # The head's box branch loses ~2 mAP in INT8 (box precision above IoU 0.75; benchmarks/RESULTS.md, issue 14):
    # backbone and neck stay INT8, the head's convs do not.
    int8_exclude=lambda m: [f"/model/model.{len(m.model) - 1}/*"]))
