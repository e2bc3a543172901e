"""Accuracy metrics, one per task, registered by the task name they serve.

Each metric takes a task's post-processed prediction for one image and that image's ``EvalSample``;
``compute`` returns named scores in percent (as MMDeploy's and torchvision's tables print them).
- Classification: top-1 / top-5 accuracy.
- ObjectDetection / InstanceSegmentation: COCO mAP (bbox, and segm with masks) from pycocotools.
- Segmentation: mIoU (and per-pixel accuracy) over the dataset's classes.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DatasetError
from ..registry import Registry
from .dataset import EvalDataset, EvalSample, coco_category_of_label, coco_class_map, model_index_by_name


class Metric:
    """Accumulate (prediction, sample) pairs; ``compute`` gives {score name: percent}."""

    def __init__(self, dataset: EvalDataset, class_names: Sequence[str] | None = None):
        self.dataset = dataset
        self.class_names = list(class_names) if class_names else None

    def update(self, prediction: Any, sample: EvalSample) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


METRICS: Registry[type[Metric]] = Registry("metric (codebase_config.task)")


@METRICS.register("Classification")
class TopKAccuracy(Metric):
    """Prediction: [(class index, name, probability), ...] best first; truth: the image's folder class."""

    def __init__(self, dataset: EvalDataset, class_names=None):
        super().__init__(dataset, class_names)
        if any(s.label is None for s in dataset.samples):
            raise DatasetError(f"{dataset.source}: classification needs an image folder laid out as <class>/<image>")
        by_name = model_index_by_name(dataset.class_names, self.class_names)
        # Folder names that are the model's class names map by name; otherwise sorted folder i is class i.
        self.truth_of = ({i: by_name[n] for i, n in enumerate(dataset.class_names)} if by_name
                         else {i: i for i in range(len(dataset.class_names))})
        self.hits = {1: 0, 5: 0}
        self.count = 0

    def update(self, prediction, sample: EvalSample) -> None:
        ranked = [int(entry[0]) for entry in prediction]
        truth = self.truth_of[sample.label]
        for k in self.hits:
            self.hits[k] += truth in ranked[:k]
        self.count += 1

    def compute(self) -> dict[str, float]:
        return {f"top-{k}": 100.0 * hits / max(self.count, 1) for k, hits in self.hits.items()}


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
            self.results.append(entry)

    def _ground_truth(self, image_ids: set[int]):
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
        from pycocotools.cocoeval import COCOeval

        image_ids = {s.image_id for s in self.dataset.samples}
        scores = {}
        for iou_type in self.iou_types:
            # One field per type, as pycocotools expects: with a box beside a mask, loadRes takes the box's area.
            drop = "segmentation" if iou_type == "bbox" else "bbox"
            results = [{k: v for k, v in r.items() if k != drop} for r in self.results
                       if iou_type == "bbox" or "segmentation" in r]
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


@METRICS.register("ObjectDetection")
class BoxMAP(CocoMAP):
    iou_types = ("bbox",)


@METRICS.register("InstanceSegmentation")
class BoxAndMaskMAP(CocoMAP):
    iou_types = ("bbox", "segm")


@METRICS.register("Segmentation")
class MeanIoU(Metric):
    """Prediction: an int class map at the original size; truth: the image's COCO masks as a class map.

    IoU per class is accumulated over the whole set (intersections and unions summed, as
    mmseg does); the mean is over classes that occur in the truth or the predictions.
    """

    ignore_index = 255

    def __init__(self, dataset: EvalDataset, class_names=None):
        super().__init__(dataset, class_names)
        if dataset.coco is None:
            raise DatasetError(f"{dataset.source}: mIoU needs a COCO annotation file with segmentations, "
                               f"not an image folder")
        by_name = model_index_by_name(dataset.class_names, self.class_names)
        categories = [c for c in dataset.coco.categories if "id" in c]
        self.class_of = ({int(c["id"]): by_name[c["name"]] for c in categories} if by_name
                         else {int(c["id"]): int(c["id"]) for c in categories})
        self.num_classes = max([*self.class_of.values(), len(self.class_names or [])]) + 1
        self.intersection = np.zeros(self.num_classes, np.int64)
        self.union = np.zeros(self.num_classes, np.int64)
        self.correct = 0
        self.labelled = 0

    def truth(self, sample: EvalSample, shape: tuple[int, int]) -> np.ndarray:
        return coco_class_map(self.dataset.coco, sample.image_id, shape, self.class_of, self.ignore_index)

    def update(self, prediction: np.ndarray, sample: EvalSample) -> None:
        pred = np.asarray(prediction).astype(np.int64)
        self.add(pred, self.truth(sample, pred.shape))

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Accumulate one (prediction, truth) pair of class maps of the same shape."""
        valid = truth != self.ignore_index
        pred, truth = np.clip(pred[valid], 0, self.num_classes - 1), truth[valid]
        self.correct += int(np.sum(pred == truth))
        self.labelled += int(truth.size)
        self.intersection += np.bincount(truth[pred == truth], minlength=self.num_classes)[:self.num_classes]
        area_pred = np.bincount(pred, minlength=self.num_classes)[:self.num_classes]
        area_truth = np.bincount(truth, minlength=self.num_classes)[:self.num_classes]
        self.union += area_pred + area_truth - np.bincount(truth[pred == truth], minlength=self.num_classes)[:self.num_classes]

    def compute(self) -> dict[str, float]:
        present = self.union > 0
        iou = self.intersection[present] / self.union[present]
        return {"mIoU": 100.0 * float(iou.mean()) if iou.size else 0.0,
                "aAcc": 100.0 * self.correct / max(self.labelled, 1)}


def metric_for(task_name: str, dataset: EvalDataset, class_names: Sequence[str] | None) -> Metric:
    return METRICS.get(task_name, field="codebase_config.task")(dataset, class_names)
