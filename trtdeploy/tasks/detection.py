"""Object detection and instance segmentation for every registered detector family (trtdeploy.export.families).

The graph takes the batch this task's pipeline made (resize keeping the aspect ratio, normalise, pad
bottom/right, or both sides for YOLO's letterbox, as the family's pre-processing says) and returns MMDeploy's
layout: ``dets`` [N, K, 5] (x1, y1, x2, y2, score in input pixels), ``labels`` [N, K] (the model's class ids;
padding rows have score 0 and label -1) and, for Mask R-CNN, ``masks`` [N, K, 28, 28] (the probability of each
box's own class; YOLO-seg: [N, K, H/4, W/4] over the whole input, ``mask_layout='image'``). ``codebase_config.post_processing``
(MMDeploy's keys) sets the detector's thresholds for the export and for the PyTorch
comparison alike: score_threshold, iou_threshold, keep_top_k, and pre_top_k (a cap on the
NMS candidates). confidence_threshold and max_output_boxes_per_class have no counterpart
in torchvision's detectors and are accepted for compatibility only.
"""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..datasets.evaluation import EvalDataset, EvalSample, coco_category_of_label
from ..errors import ConfigError, DatasetError, ModelError
from ..utils.fileio import atomic_write
from ..utils.image import as_rgb_array
from ..utils.logging import logger
from .base import TASKS, Metric, OutputTensor, Task, fit_image, text_values
from .classification import IMAGENET_MEAN, IMAGENET_STD

# key -> (accepts the value, what it must be)
POST_PROCESSING_RANGES = {
    "score_threshold": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "confidence_threshold": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "iou_threshold": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "keep_top_k": (lambda v: isinstance(v, int) and v > 0, "an integer > 0 (the fixed number of output rows)"),
    "pre_top_k": (lambda v: isinstance(v, int) and (v > 0 or v == -1), "an integer > 0, or -1 for no cap"),
    "max_output_boxes_per_class": (lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    "background_label_id": (lambda v: isinstance(v, int) and v >= -1, "a class id, or -1 for none"),
}


def detector_family(model) -> tuple[str, Any] | None:
    """(name, DetectorFamily) of a registered family that recognises ``model``, else None."""
    from ..export import DETECTOR_FAMILIES  # importing trtdeploy.export registers the shipped families

    return DETECTOR_FAMILIES.of(model)


def class_palette(n: int) -> np.ndarray:
    """A fixed, well-spread RGB colour per class id (the same in every picture)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbouring ids apart
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)] for h in hues], np.uint8)


MATCH_IOU = 0.5


def match_detections(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> dict:
    """Pair each reference detection (``theirs``) with the free one of ``ours`` of the same label and highest IoU
    (at least MATCH_IOU); row order is no measure, since detections with equal scores come in any order.

    Returns counts (reference, matched, unmatched: reference and candidate detections left without a partner)
    and the largest box/score/mask difference over matched pairs (0 when none matched).
    """
    found = {"reference": 0, "matched": 0, "unmatched": 0, "box": 0.0, "score": 0.0, "mask": 0.0}
    for i in range(len(theirs["labels"])):
        free = list(np.flatnonzero(ours["labels"][i] >= 0))
        ref = np.flatnonzero(theirs["labels"][i] >= 0)
        found["reference"] += len(ref)
        for j in ref:
            same = [k for k in free if ours["labels"][i, k] == theirs["labels"][i, j]]
            ious = [_iou(ours["dets"][i, k, :4], theirs["dets"][i, j, :4]) for k in same]
            if not same or max(ious) < MATCH_IOU:
                found["unmatched"] += 1
                continue
            k = same[int(np.argmax(ious))]
            free.remove(k)
            found["matched"] += 1
            gap = np.abs(ours["dets"][i, k].astype(np.float64) - theirs["dets"][i, j])
            found["box"], found["score"] = max(found["box"], float(gap[:4].max())), max(found["score"], float(gap[4]))
            if "masks" in ours:
                found["mask"] = max(found["mask"], float(np.abs(ours["masks"][i, k] - theirs["masks"][i, j]).max()))
        found["unmatched"] += len(free)
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - w * h
    return w * h / union if union > 0 else float(np.allclose(a, b))


def _box_xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [x1, y1, x2 - x1, y2 - y1]


class CocoMAP(Metric):
    """COCO mAP with pycocotools. Prediction: dict with ``boxes`` (N, 4 xyxy, original pixels),
    ``scores`` (N,), ``labels`` (N,) and, for segm, ``masks`` (N, H, W) at the original size."""

    iou_types: tuple[str, ...] = ("bbox",)

    def __init__(self, dataset: EvalDataset, class_names=None):
        super().__init__(dataset, class_names)
        if dataset.coco is None:
            raise DatasetError(f"{dataset.source}: COCO mAP needs a COCO annotation file (.json), not an image folder")
        self.category_of = coco_category_of_label(dataset.coco, self.class_names)
        self.results: list[dict] = []

    def update(self, prediction: Mapping[str, np.ndarray], sample: EvalSample) -> None:
        from pycocotools import mask as mask_utils

        boxes = np.asarray(prediction["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(prediction["scores"], np.float64).reshape(-1)
        labels = np.asarray(prediction["labels"]).reshape(-1)
        masks = prediction.get("masks")
        for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
            category = self.category_of.get(int(label))
            if category is None:
                continue  # a class the test set does not annotate
            entry = {"image_id": sample.image_id, "category_id": category, "bbox": _box_xywh(box), "score": float(score)}
            if "segm" in self.iou_types and masks is not None:
                entry["segmentation"] = mask_utils.encode(np.asfortranarray(np.asarray(masks[i]).astype(np.uint8)))
            if "keypoints" in prediction:  # COCO keypoint results: x, y, visibility (the score ranks the detection)
                xy = np.asarray(prediction["keypoints"][i], np.float64)[:, :2]
                entry["keypoints"] = np.concatenate([xy, np.ones((len(xy), 1))], axis=1).ravel().tolist()
            self.results.append(entry)

    def _ground_truth(self, image_ids: set[int]):
        import contextlib
        import io

        from pycocotools.coco import COCO

        coco = self.dataset.coco
        anns = []
        for image_id in image_ids:
            for k, ann in enumerate(coco.annotations.get(image_id, [])):
                x, y, w, h = ann["bbox"]
                anns.append({"iscrowd": 0, "area": float(w) * float(h), "id": image_id * 100000 + k + 1, **ann})
        gt = COCO()
        gt.dataset = {"images": [{"id": im.id, "width": im.width, "height": im.height} for im in coco.images
                                 if im.id in image_ids],
                      "annotations": anns, "categories": coco.categories}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt

    def compute(self) -> dict[str, float]:
        import contextlib
        import io

        from pycocotools.cocoeval import COCOeval

        image_ids = {s.image_id for s in self.dataset.samples}
        scores = {}
        keypoints = ("keypoints",) if any("keypoints" in r for r in self.results) else ()
        for iou_type in self.iou_types + keypoints:
            # One field per type, as pycocotools expects: with a box beside a mask, loadRes takes the box's area.
            field = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
            results = [{k: v for k, v in r.items() if k == field or k not in ("bbox", "segmentation", "keypoints")}
                       for r in self.results if field in r]
            if not results:
                scores.update({f"{iou_type} {n}": 0.0 for n in ("mAP", "mAP50", "mAP75")})
                continue
            gt = self._ground_truth(image_ids)
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(results)
                evaluator = COCOeval(gt, dt, iou_type)
                evaluator.params.imgIds = sorted(image_ids)
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
            stats = [max(float(v), 0.0) * 100.0 for v in evaluator.stats[:3]]  # -1 means "no ground truth"
            scores.update(dict(zip((f"{iou_type} mAP", f"{iou_type} mAP50", f"{iou_type} mAP75"), stats)))
        return scores


class BoxMAP(CocoMAP):
    iou_types = ("bbox",)


class BoxAndMaskMAP(CocoMAP):
    iou_types = ("bbox", "segm")


@TASKS.register("ObjectDetection")
class ObjectDetection(Task):
    name = "ObjectDetection"
    metric = BoxMAP
    # boxes (x1, y1, x2, y2 in original-image pixels), scores, labels and names per image; images of one
    # request have different counts, so rows are padded with label -1, which from_tensors drops
    served_outputs = (OutputTensor("boxes", "float32", (-1, 4)), OutputTensor("scores", "float32", (-1,)),
                      OutputTensor("labels", "int64", (-1,)), OutputTensor("class_names", "bytes", (-1,)))
    default_input_shape = (1, 3, 800, 1344)
    with_masks = False
    with_keypoints = False  # the model must have a keypoint head (it may have one either way)

    @property
    def post_processing(self) -> dict:
        return dict(self.settings.get("post_processing") or {})

    @property
    def preprocess_cfg(self) -> dict:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "keep_ratio": True, "pad_value": 0.0,
                **dict(self.settings.get("preprocess") or {})}

    # -- export -----------------------------------------------------------
    def family(self, model):
        """The model's DetectorFamily; ModelError naming the registered families when none recognises it."""
        from ..export import DETECTOR_FAMILIES

        found = detector_family(model)
        if found is None:
            raise ModelError(f"{type(model).__name__} is not a model of a registered detector family "
                             f"({', '.join(DETECTOR_FAMILIES)}) but codebase_config.task is {self.name!r}; use a "
                             f"configs/classification or configs/segmentation deploy config, or register its family "
                             f"(README: 'Adding a detector family')")
        return found[1]

    def int8_exclude_nodes(self, model) -> list[str]:
        return self.family(model).int8_exclude(model)

    def check_model(self, model) -> None:
        from ..export import FUNCTION_REWRITER

        self.check_post_processing()
        kind = type(model).__name__
        family = self.family(model)
        family.check(model)
        # The family's pre-processing from now on (calibration and --test-img run before any sidecar is written).
        self.settings["preprocess"] = {**family.preprocess(model), **dict(self.settings.get("preprocess") or {})}
        extras = family.extra_outputs(model)
        has_masks = "masks" in extras
        if has_masks != self.with_masks:
            raise ModelError(
                f"{kind} {'has' if has_masks else 'has no'} mask head but codebase_config.task is {self.name!r}; use a "
                f"configs/{'instance-seg' if has_masks else 'detection'} deploy config")
        if self.with_keypoints and "keypoints" not in extras:
            raise ModelError(f"{kind} has no keypoint head but codebase_config.task is {self.name!r}; use a "
                             f"configs/detection deploy config")
        for fn in family.rewritten(model):
            target = f"{fn.__module__}.{fn.__qualname__}"
            if target not in FUNCTION_REWRITER.targets():
                raise ModelError(f"{kind}'s post-processing {target} has no rewriter, so it cannot become a fixed-size "
                                 f"graph; register one with @FUNCTION_REWRITER.register({target!r}) "
                                 f"(see trtdeploy/export/rewriters/)")

    def check_post_processing(self) -> None:
        """Raise ConfigError for a post_processing value out of range (or a mask option we lack), naming the field."""
        if self.settings.get("export_postprocess_mask"):
            raise ConfigError("codebase_config.export_postprocess_mask=True (pasting masks inside the graph) is not "
                              "supported; set it to False: the graph returns 28x28 masks and `run`/`test` paste them")
        for key, value in self.post_processing.items():
            accepts, what = POST_PROCESSING_RANGES.get(key, (lambda v: True, ""))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not accepts(value):
                raise ConfigError(f"codebase_config.post_processing.{key} must be {what or 'a number'}, got {value!r}")

    def configure(self, model) -> dict:
        """Apply post_processing to the model, so eager and exported runs agree; returns the thresholds in effect."""
        return self.family(model).configure(model, self.post_processing)

    def torch_wrapper(self, model):
        from ..export.rewriters import DetectorGraph

        self.configure(model)
        return DetectorGraph(model)

    def torch_outputs(self, model, batch: np.ndarray, output_names: list[str]) -> dict[str, np.ndarray]:
        """The detector's own eager output on the same pre-processed batch, padded like the graph's."""
        import torch

        keep_top_k = self.configure(model)["keep_top_k"]
        device = next(model.parameters()).device
        with torch.no_grad():
            results = self.family(model).eager(model, torch.from_numpy(batch).to(device), self.post_processing)
        return padded_outputs(results, keep_top_k, output_names)

    def output_difference(self, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> float:
        """The largest difference (box, score, mask) between matched detections; unmatched ones are counted, not
        measured (``describe_difference``); a raw head kept raw (no dets): its arrays' largest difference."""
        if "dets" not in ours:
            return super().output_difference(ours, theirs)
        match = match_detections(ours, theirs)
        return max(match["box"], match["score"], match["mask"])

    def describe_difference(self, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> str:
        if "dets" not in ours:
            return f"raw head kept raw ({', '.join(ours)}): {super().describe_difference(ours, theirs)}"
        m = match_detections(ours, theirs)
        text = (f"{m['matched']} of {m['reference']} detections matched (same label, IoU >= {MATCH_IOU}), "
                f"{m['unmatched']} unmatched; matched boxes differ by at most {m['box']:.3g} px, scores by {m['score']:.3g}")
        return text + (f", masks by {m['mask']:.3g}" if "masks" in ours else "")

    def sidecar_facts(self, model, model_spec: Any) -> dict:
        family = self.family(model)
        num_classes = family.num_classes(model)
        names = self.settings.get("class_names") or family.class_names(model) or [f"class_{i}" for i in range(num_classes)]
        preprocess = {**self.preprocess_cfg, **family.preprocess(model), **dict(self.settings.get("preprocess") or {})}
        applied = self.configure(model)
        return {"task": self.name, "class_names": list(names), "num_classes": num_classes, "preprocess": preprocess,
                "mask_layout": family.mask_layout, "post_processing": {**self.post_processing, **applied}}

    def adapt_graph(self, model):
        """A raw head ([N, 4 + C, A], e.g. `yolo export format=onnx`) gets decoding and NMS appended when
        ``codebase_config.post_processing`` asks for it; graphs that return ``dets``/``labels`` stay as they are."""
        from ..passes.append_nms import append_nms, raw_head_layout

        outputs = [o.name for o in model.graph.output]
        if "dets" in outputs or not self.post_processing:
            if "dets" not in outputs and raw_head_layout(model) is not None:
                logger.info("keeping the raw detection head %s: set codebase_config.post_processing (score_threshold, "
                            "iou_threshold, keep_top_k) to append decoding and NMS", outputs)
            return model
        self.check_post_processing()
        return append_nms(model, self.post_processing)

    # -- inference --------------------------------------------------------
    def preprocess(self, image, input_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
        cfg = self.preprocess_cfg
        return fit_image(image, input_shape[-2:], cfg["mean"], cfg["std"], cfg["keep_ratio"], cfg["pad_value"],
                         cfg.get("center", False))

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: dict) -> list[dict]:
        """Per image: boxes in original-image pixels, scores, labels, names (and pasted boolean masks)."""
        if "dets" not in outputs or "labels" not in outputs:
            fix = ("convert it with codebase_config.post_processing to append decoding and NMS" if len(outputs) == 1 else
                   "codebase_config.post_processing decodes one [N, 4 + C, A] head only, so compare its arrays "
                   "(`trtdeploy compare`) or export the model with its own post-processing")
            raise ModelError(f"the model returns {list(outputs)}, not dets/labels: it ends in a raw head; {fix}")
        dets, labels = np.asarray(outputs["dets"]), np.asarray(outputs["labels"])
        sy, sx = meta["scale"]
        oh, ow = meta["orig_shape"]
        top, left = meta.get("pad", (0, 0))
        results = []
        for i in range(len(dets)):
            keep = labels[i] >= 0
            boxes = (dets[i, keep, :4] - np.array([left, top, left, top], np.float32)) / np.array([sx, sy, sx, sy], np.float32)
            boxes = np.clip(boxes, 0, [ow, oh, ow, oh]).astype(np.float32)
            result = {"boxes": boxes, "scores": dets[i, keep, 4].astype(np.float32),
                      "labels": labels[i, keep].astype(np.int64),
                      "names": [self._name(int(c)) for c in labels[i, keep]]}
            if "keypoints" in outputs:  # [k, P, 3]: x, y in original pixels, heatmap score
                kp = np.asarray(outputs["keypoints"])[i, keep].astype(np.float32)
                kp[..., :2] = (kp[..., :2] - np.array([left, top], np.float32)) / np.array([sx, sy], np.float32)
                result["keypoints"] = kp
            if "masks" in outputs and self.settings.get("mask_layout") == "image":
                result["masks"] = image_masks(np.asarray(outputs["masks"])[i, keep], meta)
            elif "masks" in outputs:
                result["masks"] = paste_masks(np.asarray(outputs["masks"])[i, keep], boxes, (oh, ow))
            results.append(result)
        return results

    def _name(self, idx: int) -> str:
        names = self.settings.get("class_names")
        return names[idx] if names and 0 <= idx < len(names) else f"class_{idx}"

    @classmethod
    def to_tensors(cls, results: list) -> dict[str, np.ndarray]:
        n, most = len(results), max([len(r["scores"]) for r in results] + [0])
        out = {"boxes": np.zeros((n, most, 4), np.float32), "scores": np.zeros((n, most), np.float32),
               "labels": np.full((n, most), -1, np.int64), "class_names": np.full((n, most), b"", dtype=object)}
        for i, r in enumerate(results):
            k = len(r["scores"])
            out["boxes"][i, :k] = r["boxes"]
            out["scores"][i, :k] = r["scores"]
            out["labels"][i, :k] = r["labels"]
            out["class_names"][i, :k] = [name.encode() for name in r["names"]]
        return out

    @classmethod
    def from_tensors(cls, arrays: Mapping[str, np.ndarray]) -> list:
        results = []
        for boxes, scores, labels, names in zip(arrays["boxes"], arrays["scores"], arrays["labels"],
                                                arrays["class_names"]):
            keep = labels >= 0
            results.append({"boxes": boxes[keep].astype(np.float32), "scores": scores[keep].astype(np.float32),
                            "labels": labels[keep].astype(np.int64), "names": text_values(names[keep])})
        return results

    def format_result(self, result, limit: int = 20) -> str:
        det = result[0]
        lines = [f"  {len(det['scores'])} detections" + (f" (best {limit} shown)" if len(det["scores"]) > limit else "")]
        for j in range(min(limit, len(det["scores"]))):
            x1, y1, x2, y2 = (float(v) for v in det["boxes"][j])
            lines.append(f"  {det['names'][j]} (class {int(det['labels'][j])}): {float(det['scores'][j]):.3f} "
                         f"at [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
        return "\n".join(lines)

    def visualize(self, image, result, out_path: str | Path, limit: int = 100) -> None:
        """Draw masks (tinted), boxes, class names and scores over the image."""
        from PIL import Image, ImageDraw

        img = as_rgb_array(image).astype(np.float32)
        det = result[0]
        shown = range(min(limit, len(det["scores"])))
        palette = class_palette(max([int(c) for c in det["labels"]] + [0]) + 1)
        for j in reversed(shown):
            if "masks" in det:
                m = det["masks"][j]
                img[m] = 0.5 * img[m] + 0.5 * palette[int(det["labels"][j])]
        im = Image.fromarray(img.astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for j in reversed(shown):
            colour = tuple(int(c) for c in palette[int(det["labels"][j])])
            x1, y1, x2, y2 = (float(v) for v in det["boxes"][j])
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
            for x, y, score in det["keypoints"][j] if "keypoints" in det else ():
                if score > 0:  # heatmap logit > 0: more likely there than not
                    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=(0, 0, 0))
            text = f"{det['names'][j]} {float(det['scores'][j]):.2f}"
            ty = max(0.0, y1 - 12)
            draw.rectangle([x1, ty, x1 + 6 * len(text) + 4, ty + 12], fill=colour)
            draw.text((x1 + 2, ty), text, fill=(0, 0, 0))
        with atomic_write(out_path, "wb") as f:
            im.save(f, format="PNG" if str(out_path).lower().endswith(".png") else "JPEG")


@TASKS.register("KeypointDetection")
class KeypointDetection(ObjectDetection):
    """Detections with keypoints (Keypoint R-CNN): what ObjectDetection answers, plus each detection's keypoints,
    served too: [k, P, 3] per image (x, y in original-image pixels, the keypoint's score)."""

    name = "KeypointDetection"
    served_outputs = ObjectDetection.served_outputs + (OutputTensor("keypoints", "float32", (-1, -1, 3)),)
    with_keypoints = True

    @classmethod
    def to_tensors(cls, results: list) -> dict[str, np.ndarray]:
        out = super().to_tensors(results)
        points = max([r["keypoints"].shape[1] for r in results if len(r["keypoints"])] + [0])
        out["keypoints"] = np.zeros((*out["scores"].shape, points, 3), np.float32)
        for i, r in enumerate(results):
            out["keypoints"][i, :len(r["scores"])] = r["keypoints"]
        return out

    @classmethod
    def from_tensors(cls, arrays: Mapping[str, np.ndarray]) -> list:
        results = super().from_tensors(arrays)
        for r, labels, keypoints in zip(results, arrays["labels"], arrays["keypoints"]):
            r["keypoints"] = keypoints[labels >= 0].astype(np.float32)
        return results


@TASKS.register("InstanceSegmentation")
class InstanceSegmentation(ObjectDetection):
    name = "InstanceSegmentation"
    metric = BoxAndMaskMAP
    served_outputs = ()  # instance masks are image-sized per detection: not served
    with_masks = True


def padded_outputs(results: list[dict], keep_top_k: int, output_names: list[str]) -> dict[str, np.ndarray]:
    """A family's eager per-image dicts -> the graph's padded arrays (score 0, label -1 in padding).

    Each dict holds ``boxes`` [k, 4], ``scores`` [k], ``labels`` [k] and optionally ``masks`` [k, M, M] (or
    [k, H, W]) and ``keypoints`` [k, P, 3], best first; outputs follow ``output_names`` in the graph's order.
    """
    n = len(results)
    arrays = {"dets": np.zeros((n, keep_top_k, 5), np.float32), "labels": np.full((n, keep_top_k), -1, np.int64)}
    for extra in ("masks", "keypoints"):
        if any(extra in r for r in results):
            arrays[extra] = np.zeros((n, keep_top_k, *results[0][extra].shape[1:]), np.float32)
    for i, r in enumerate(results):
        k = min(keep_top_k, len(r["scores"]))
        arrays["dets"][i, :k, :4] = r["boxes"][:k].cpu().numpy()
        arrays["dets"][i, :k, 4] = r["scores"][:k].cpu().numpy()
        arrays["labels"][i, :k] = r["labels"][:k].cpu().numpy()
        for extra in ("masks", "keypoints"):
            if extra in arrays:
                arrays[extra][i, :k] = r[extra][:k].cpu().numpy()
    return dict(zip(output_names, arrays.values()))


def image_masks(masks: np.ndarray, meta: dict, threshold: float = 0.5) -> np.ndarray:
    """[K, h, w] probabilities over the whole input (YOLO's prototype grid) -> [K, H, W] booleans on the image.

    As ultralytics does: bilinear up to the input size, cut the letterbox padding off, bilinear to the image.
    """
    import torch
    import torch.nn.functional as F

    (oh, ow), (rh, rw), (top, left) = meta["orig_shape"], meta["valid_shape"], meta.get("pad", (0, 0))
    if len(masks) == 0:
        return np.zeros((0, oh, ow), bool)
    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(masks, np.float32))[None], tuple(meta["input_shape"]),
                       mode="bilinear", align_corners=False)[:, :, top:top + rh, left:left + rw]
    return (F.interpolate(up, (oh, ow), mode="bilinear", align_corners=False)[0] > threshold).numpy()


def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_hw: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """[K, M, M] box-relative probabilities -> [K, H, W] booleans, pasted the way torchvision pastes them."""
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    if len(masks) == 0:
        return np.zeros((0, *image_hw), bool)
    pasted = paste_masks_in_image(torch.from_numpy(np.ascontiguousarray(masks[:, None], np.float32)),
                                  torch.from_numpy(boxes), image_hw)
    return (pasted[:, 0] >= threshold).numpy()
