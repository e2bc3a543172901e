"""Ultralytics RT-DETR as one graph: no NMS, TopK over the decoder's queries (the head's own ``postprocess``).

Rewritten: ``ultralytics.nn.modules.head.RTDETRDecoder.forward``. The decoder's anchors are regenerated from the
traced feature sizes (its cache would freeze the export size into the graph), its top ``keep_top_k`` (query,
class) pairs become ``dets`` in input pixels (xyxy, score) and ``labels``; rows at or below ``score_threshold``
are padding. Boxes come normalised to the image; the image size is the first decoder input's size times its
stride, 8 in every ultralytics RT-DETR (P3/8, P4/16, P5/32). Pre-processing: ultralytics' letterbox, as YOLO.
"""
from __future__ import annotations

import torch

from ..families import DETECTOR_FAMILIES, DetectorFamily
from ..rewriter import FUNCTION_REWRITER
from .candidates import post_processing
from .ultralytics_yolo import LETTERBOX, ultralytics_class_names, head_of, thresholds

FIRST_STRIDE = 8


def _image_wh(first_feature: torch.Tensor) -> torch.Tensor:
    hw = torch._shape_as_tensor(first_feature)[-2:].to(torch.float32) * FIRST_STRIDE
    return hw.flip(0).repeat(2)  # (W, H, W, H)


def _to_dets(y: torch.Tensor, image_wh: torch.Tensor, settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's [N, Q, 6] (cx, cy, w, h normalised, score, class), best first -> padded dets [N, K, 5], labels."""
    from ultralytics.utils.ops import xywh2xyxy

    y = y[:, : int(settings["keep_top_k"])]
    valid = y[..., 4] > float(settings["score_threshold"])
    dets = torch.cat([xywh2xyxy(y[..., :4]) * image_wh.to(y.dtype), y[..., 4:5]], dim=-1) * valid.unsqueeze(-1)
    labels = torch.where(valid, y[..., 5].long(), torch.full_like(y[..., 5], -1).long())
    return dets, labels


@FUNCTION_REWRITER.register("ultralytics.nn.modules.head.RTDETRDecoder.forward")
def rtdetr_decoder_forward(ctx, self, x, batch=None):
    self.shapes = []  # no cached anchors: regenerate them from the traced sizes
    y, _ = ctx.origin(self, x, batch)
    return _to_dets(y, _image_wh(x[0]), thresholds(post_processing(ctx.cfg)))


def _eager(model, batch: torch.Tensor, settings: dict) -> list[dict]:
    """The model's own inference, filtered as ultralytics' RTDETRPredictor does (score > conf, max_det rows)."""
    y = model(batch)[0]
    h, w = batch.shape[-2:]
    dets, labels = _to_dets(y, torch.tensor([w, h, w, h], dtype=y.dtype), thresholds(settings))
    return [{"boxes": d[l >= 0, :4], "scores": d[l >= 0, 4], "labels": l[l >= 0]} for d, l in zip(dets, labels)]


def _configure(model, settings: dict) -> dict:
    applied = thresholds(settings)
    return {k: applied[k] for k in ("score_threshold", "iou_threshold", "keep_top_k")}


DETECTOR_FAMILIES.add("ultralytics RT-DETR", DetectorFamily(
    class_path="ultralytics.nn.tasks.RTDETRDetectionModel", num_classes=lambda m: head_of(m).nc,
    rewritten=lambda m: [type(head_of(m)).forward], configure=_configure, eager=_eager,
    preprocess=lambda m: dict(LETTERBOX), class_names=ultralytics_class_names))
