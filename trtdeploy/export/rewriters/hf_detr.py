"""Hugging Face DETR (``transformers``' ``DetrForObjectDetection``) as one graph: no NMS, each query's best class.

Rewritten: ``transformers.models.detr.modeling_detr.DetrForObjectDetection.forward``. The graph does what the
image processor's ``post_process_object_detection`` does: softmax over the classes and "no object", each query's
best real class and its probability, boxes from normalised (cx, cy, w, h) to input pixels (x1, y1, x2, y2); then
the best ``keep_top_k`` queries, those at or below ``score_threshold`` as padding (score 0, label -1).
Pre-processing: the detection task's defaults (ImageNet mean/std on RGB, keep ratio, zero padding), which are
the processor's. The graph has no pixel mask (the processor's marks padding), so padding counts as image, in the
graph and its eager reference alike: convert with a dynamic profile and a keep-ratio resize so little padding is
left.
"""
from __future__ import annotations

import torch

from ..families import DETECTOR_FAMILIES, DetectorFamily
from ..rewriter import FUNCTION_REWRITER
from .candidates import post_processing

DEFAULTS = {"score_threshold": 0.5, "keep_top_k": 100}  # the processor's threshold; DETR's 100 queries


def thresholds(settings: dict, model) -> dict:
    """The post_processing values in effect (keep_top_k at most the model's query count)."""
    applied = {key: settings.get(key, default) for key, default in DEFAULTS.items()}
    applied["keep_top_k"] = min(int(applied["keep_top_k"]), int(model.config.num_queries))
    return applied


def _to_dets(logits: torch.Tensor, boxes: torch.Tensor, image: torch.Tensor,
             settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, Q, C + 1], boxes [N, Q, 4] (normalised cx, cy, w, h) -> dets [N, K, 5], labels [N, K], best first."""
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    scores, order = scores.topk(int(settings["keep_top_k"]), dim=1)
    labels = labels.gather(1, order)
    cxcywh = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    hw = torch._shape_as_tensor(image)[-2:].to(boxes.dtype)
    wh = hw.flip(0).repeat(2)  # (W, H, W, H)
    xyxy = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], dim=-1) * wh
    valid = scores > float(settings["score_threshold"])
    dets = torch.cat([xyxy, scores.unsqueeze(-1)], dim=-1) * valid.unsqueeze(-1)
    return dets, torch.where(valid, labels, torch.full_like(labels, -1))


@FUNCTION_REWRITER.register("transformers.models.detr.modeling_detr.DetrForObjectDetection.forward")
def detr_forward(ctx, self, pixel_values, *args, **kwargs):
    out = ctx.origin(self, pixel_values=pixel_values)
    return _to_dets(out.logits, out.pred_boxes, pixel_values, thresholds(post_processing(ctx.cfg), self))


def _eager(model, batch: torch.Tensor, settings: dict) -> list[dict]:
    out = model(pixel_values=batch)
    dets, labels = _to_dets(out.logits, out.pred_boxes, batch, thresholds(settings, model))
    return [{"boxes": d[l >= 0, :4], "scores": d[l >= 0, 4], "labels": l[l >= 0]} for d, l in zip(dets, labels)]


def _class_names(model) -> list[str] | None:
    """The config's id2label, unless it holds only transformers' placeholders (LABEL_0, ...)."""
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


DETECTOR_FAMILIES.add("Hugging Face DETR", DetectorFamily(
    class_path="transformers.models.detr.modeling_detr.DetrForObjectDetection",
    num_classes=lambda m: int(m.config.num_labels), rewritten=lambda m: [type(m).forward],
    configure=lambda m, settings: thresholds(settings, m), eager=_eager,
    preprocess=lambda m: {}, class_names=_class_names))  # the detection task's defaults are DETR's processor's
