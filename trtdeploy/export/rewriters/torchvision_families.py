"""torchvision's detector families: RetinaNet, FCOS, SSD and the R-CNNs (Faster, Mask, Keypoint).

Their rewriters live beside this file (single_stage.py, two_stage.py, transform.py). Pre-processing is the
model's own ``GeneralizedRCNNTransform`` mean/std with the resize done by the task's pipeline; thresholds
are attributes of the model (``score_thresh``, ``nms_thresh``, ``detections_per_img``).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ..families import DETECTOR_FAMILIES, DetectorFamily

# MMDeploy's post_processing key -> the attribute torchvision's detectors read.
POST_PROCESSING_ATTRS = {"score_threshold": "score_thresh", "iou_threshold": "nms_thresh",
                         "keep_top_k": "detections_per_img"}


def coco_categories() -> list[str]:
    """torchvision's 91 COCO ids (0 is the background, some ids are 'N/A')."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


@contextlib.contextmanager
def preprocessed_input(model) -> Iterator[None]:
    """Run a torchvision detector eagerly on an already pre-processed batch (no resize, no normalise).

    The detector's own post-processing stays as it is, and its masks stay unpasted
    [K, 1, M, M], so its output is the reference for the exported graph.
    """
    import torch
    from torchvision.models.detection.image_list import ImageList

    class AlreadyPreprocessed(torch.nn.Module):
        def forward(self, images, targets=None):
            return ImageList(images, [tuple(images.shape[-2:])] * len(images)), targets

        def postprocess(self, result, image_shapes, original_image_sizes):
            return result

    original = model.transform
    model.transform = AlreadyPreprocessed()
    try:
        yield
    finally:
        model.transform = original


def _eager(model, batch, post_processing: dict) -> list[dict]:
    """masks [k, M, M]; keypoints [k, P, 3] as (x, y, heatmap score), the graph's layout."""
    import torch

    with preprocessed_input(model):
        results = model(batch)
    for r in results:
        if "masks" in r:
            r["masks"] = r["masks"][:, 0]
        if "keypoints" in r:
            r["keypoints"] = torch.cat([r["keypoints"][..., :2], r.pop("keypoints_scores").unsqueeze(-1)], dim=-1)
    return results


def _method(obj, name: str) -> Callable:
    return getattr(type(obj), name)


def _family(class_path: str, num_classes: Callable[[Any], int], owner: Callable[[Any], Any],
            rewritten: Callable[[Any], list[Callable]], extra_outputs=lambda m: ()) -> DetectorFamily:
    def configure(model, post_processing: dict) -> dict:
        for key, attr in POST_PROCESSING_ATTRS.items():
            if key in post_processing:
                setattr(owner(model), attr, post_processing[key])
        return {key: getattr(owner(model), attr) for key, attr in POST_PROCESSING_ATTRS.items()}

    def preprocess(model) -> dict:
        t = model.transform
        return {"mean": [255.0 * v for v in t.image_mean], "std": [255.0 * v for v in t.image_std],
                "keep_ratio": True, "pad_value": 0.0}

    def class_names(model) -> list[str] | None:
        coco = coco_categories()
        return coco if num_classes(model) == len(coco) else None

    return DetectorFamily(class_path, num_classes, rewritten, configure, _eager, preprocess, class_names,
                          extra_outputs)


def _rcnn_outputs(model) -> tuple[str, ...]:
    heads = model.roi_heads
    return (("masks",) if heads.has_mask() else ()) + (("keypoints",) if heads.has_keypoint() else ())


def _rcnn_rewritten(model) -> list[Callable]:
    return [_method(model.rpn, "forward"), _method(model.roi_heads, "forward"),
            _method(model.roi_heads.box_roi_pool, "forward")]


def _single_stage(m) -> list[Callable]:
    return [_method(m, "postprocess_detections")]


DETECTOR_FAMILIES.add("torchvision RetinaNet", _family(
    "torchvision.models.detection.retinanet.RetinaNet", lambda m: m.head.classification_head.num_classes,
    lambda m: m, _single_stage))
DETECTOR_FAMILIES.add("torchvision FCOS", _family(
    "torchvision.models.detection.fcos.FCOS", lambda m: m.head.classification_head.num_classes,
    lambda m: m, _single_stage))
DETECTOR_FAMILIES.add("torchvision SSD", _family(
    "torchvision.models.detection.ssd.SSD", lambda m: m.head.classification_head.num_columns,
    lambda m: m, _single_stage))
DETECTOR_FAMILIES.add("torchvision Faster/Mask/Keypoint R-CNN", _family(
    "torchvision.models.detection.generalized_rcnn.GeneralizedRCNN",
    lambda m: m.roi_heads.box_predictor.cls_score.out_features, lambda m: m.roi_heads, _rcnn_rewritten,
    _rcnn_outputs))
