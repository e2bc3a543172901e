"""Semantic segmentation (FCN, DeepLabV3, LRASPP): the graph ends in a per-pixel class map.

Like MMDeploy's mmseg configs, ``codebase_config.with_argmax`` (default True) puts the
ArgMax inside the graph, so the output ``output`` is an int64 class map [N, 1, H, W];
with False it is the score map [N, C, H, W] and the ArgMax happens here. Scored by mIoU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..datasets.evaluation import EvalDataset, EvalSample, coco_class_map, model_index_by_name
from ..errors import DatasetError, ModelError
from ..utils.fileio import atomic_write
from ..utils.image import as_rgb_array
from .base import TASKS, Metric, Task, fit_image
from .classification import IMAGENET_MEAN, IMAGENET_STD
from .detection import class_palette, detector_family


def voc_categories() -> list[str]:
    from torchvision.models.segmentation import FCN_ResNet50_Weights

    return list(FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])


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


@TASKS.register("Segmentation")
class Segmentation(Task):
    name = "Segmentation"
    default_input_shape = (1, 3, 512, 512)
    metric = MeanIoU

    @property
    def with_argmax(self) -> bool:
        return bool(self.settings.get("with_argmax", True))

    @property
    def preprocess_cfg(self) -> dict:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "keep_ratio": False, "pad_value": 0.0,
                **dict(self.settings.get("preprocess") or {})}

    def check_model(self, model) -> None:
        import torch

        kind = type(model).__name__
        if detector_family(model) is not None:
            raise ModelError(f"{kind} is a detector but codebase_config.task is 'Segmentation'; "
                             f"use a configs/detection or configs/instance-seg deploy config")
        if type(model).__module__.startswith("torchvision.models.segmentation"):
            return
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))
        scores = out.get("out") if isinstance(out, Mapping) else out
        if not isinstance(scores, torch.Tensor) or scores.dim() != 4:
            raise ModelError(f"{kind} does not output a per-pixel score map [N, C, H, W] (or a dict with 'out') but "
                             f"codebase_config.task is 'Segmentation'; use a configs/classification deploy config")

    def torch_wrapper(self, model):
        from ..export.rewriters import SegmentorGraph

        return SegmentorGraph(model, self.with_argmax)

    def sidecar_facts(self, model, model_spec: Any) -> dict:
        import torch

        names = self.settings.get("class_names")
        convs = [m for m in getattr(model, "classifier", model).modules() if isinstance(m, torch.nn.Conv2d)]
        num_classes = convs[-1].out_channels if convs else None
        if names is None and type(model).__module__.startswith("torchvision.models.segmentation") \
                and num_classes == len(voc_categories()):
            names = voc_categories()
        return {"task": self.name, "class_names": list(names) if names else None,
                "num_classes": num_classes, "preprocess": self.preprocess_cfg}

    # -- inference --------------------------------------------------------
    def preprocess(self, image, input_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
        cfg = self.preprocess_cfg
        return fit_image(image, input_shape[-2:], cfg["mean"], cfg["std"], cfg["keep_ratio"], cfg["pad_value"])

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: dict) -> list[np.ndarray]:
        """One int class map per image, at the original image's size."""
        from PIL import Image

        out = np.asarray(next(iter(outputs.values())))
        maps = out[:, 0] if out.shape[1] == 1 and np.issubdtype(out.dtype, np.integer) else out.argmax(axis=1)
        rh, rw = meta["valid_shape"]
        oh, ow = meta["orig_shape"]
        return [np.asarray(Image.fromarray(m[:rh, :rw].astype(np.int32)).resize((ow, oh), Image.NEAREST))
                for m in maps]

    def _name(self, idx: int) -> str:
        names = self.settings.get("class_names")
        return names[idx] if names and 0 <= idx < len(names) else f"class_{idx}"

    def format_result(self, result) -> str:
        class_map = result[0]
        ids, counts = np.unique(class_map, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        lines = [f"  {self._name(int(ids[i]))} (class {int(ids[i])}): {100.0 * counts[i] / class_map.size:.1f}% of pixels"
                 for i in order[:10]]
        more = f"\n  ... and {len(ids) - 10} more classes" if len(ids) > 10 else ""
        classes = f"{len(ids)} class{'es' if len(ids) != 1 else ''}"
        return f"  {classes} in a {class_map.shape[1]}x{class_map.shape[0]} map:\n" + "\n".join(lines) + more

    def visualize(self, image, result, out_path: str | Path) -> None:
        """Blend a colour per class over the image, with a legend of the classes present."""
        from PIL import Image, ImageDraw

        img = as_rgb_array(image)
        class_map = result[0]
        ids = np.unique(class_map)
        palette = class_palette(int(ids.max()) + 1)
        blended = (0.5 * img + 0.5 * palette[class_map]).astype(np.uint8)
        im = Image.fromarray(blended)
        draw = ImageDraw.Draw(im)
        for row, idx in enumerate(ids[:20]):
            y = 4 + 14 * row
            draw.rectangle([4, y, 14, y + 10], fill=tuple(int(c) for c in palette[idx]))
            draw.text((18, y - 1), self._name(int(idx)), fill=(255, 255, 255))
        with atomic_write(out_path, "wb") as f:
            im.save(f, format="PNG" if str(out_path).lower().endswith(".png") else "JPEG")
