"""Image classification: resize + centre crop + normalise in, logits out, top-k reported, top-1/top-5 scored."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..datasets.evaluation import EvalDataset, EvalSample, model_index_by_name
from ..errors import DatasetError, ModelError
from ..utils.image import as_rgb_array, resize
from .base import TASKS, Metric, OutputTensor, Task, text_values

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def imagenet_categories() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class TopKAccuracy(Metric):
    """Prediction: [(class index, name, probability), ...] best first; truth: the image's folder class."""

    def __init__(self, dataset: EvalDataset, class_names=None):
        super().__init__(dataset, class_names)
        if any(s.label is None for s in dataset.samples):
            raise DatasetError(f"{dataset.source}: classification needs an image folder laid out as <class>/<image>")
        by_name = model_index_by_name(dataset.class_names, self.class_names)
        # Folder names that are the model's class names map by name; otherwise sorted folder i is class i: a guess,
        # which the warning below says (a model trained with another order scores near chance, silently).
        self.truth_of = ({i: by_name[n] for i, n in enumerate(dataset.class_names)} if by_name
                         else {i: i for i in range(len(dataset.class_names))})
        names = dataset.class_names
        preview = ", ".join(f"{i}={n}" for i, n in enumerate(names[:4])) + (", ..." if len(names) > 4 else "")
        self.order_note = "" if by_name else (
            f"{dataset.source}: the class order is GUESSED from the sorted folder names ({preview})"
            f"{' (they are not the model' + chr(39) + 's class names)' if self.class_names else ''}; if the model was "
            f"trained with another order, its scores are wrong: pass --classes NAME,NAME,... in the model's order "
            f"(or set codebase_config.class_names)")
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


@TASKS.register("Classification")
class Classification(Task):
    name = "Classification"
    metric = TopKAccuracy
    # top-k classes per image: ids, probabilities and names, in postprocess order
    served_outputs = (OutputTensor("class_ids", "int64", (-1,)), OutputTensor("scores", "float32", (-1,)),
                      OutputTensor("class_names", "bytes", (-1,)))
    serves_labels = True

    @property
    def preprocess_cfg(self) -> dict:
        return {"crop_ratio": 0.875, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                **dict(self.settings.get("preprocess") or {})}

    def check_model(self, model) -> None:
        import torch

        kinds = ("GeneralizedRCNN", "RetinaNet", "FCOS", "SSD")
        if any(type(model).__name__ == k for k in kinds) or (
                hasattr(model, "backbone") and hasattr(model, "classifier") and not isinstance(model.classifier, torch.nn.Linear)
                and type(model).__module__.startswith("torchvision.models.segmentation")):
            raise ModelError(f"{type(model).__name__} is not a classifier but codebase_config.task is 'Classification'; "
                             f"use a detection or segmentation deploy config")

    def sidecar_facts(self, model, model_spec) -> dict:
        names = self.settings.get("class_names")
        num_classes = getattr(getattr(model, "fc", None), "out_features", None) or _last_linear_out(model)
        if names is None and isinstance(model_spec, str) and model_spec.startswith("torchvision://") and num_classes == 1000:
            names = imagenet_categories()
        return {"task": self.name, "class_names": list(names) if names else None,
                "preprocess": self.preprocess_cfg}

    def preprocess(self, image, input_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
        """Resize the short side to crop/crop_ratio, centre-crop to the input's H x W, normalise."""
        cfg = self.preprocess_cfg
        img = as_rgb_array(image)
        meta = {"orig_shape": list(img.shape[:2])}
        h, w = int(input_shape[-2]), int(input_shape[-1])
        short = max(h, w) / cfg["crop_ratio"]
        scale = short / min(img.shape[:2])
        rh, rw = max(h, round(img.shape[0] * scale)), max(w, round(img.shape[1] * scale))
        img = resize(img, (rh, rw))
        top, left = (rh - h) // 2, (rw - w) // 2
        img = img[top:top + h, left:left + w].astype(np.float32)
        img = (img - np.asarray(cfg["mean"], np.float32)) / np.asarray(cfg["std"], np.float32)
        return img.transpose(2, 0, 1)[None].copy(), meta

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: dict) -> list[list[tuple[int, str, float]]]:
        logits = np.asarray(next(iter(outputs.values())), dtype=np.float64).reshape(
            len(next(iter(outputs.values()))), -1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        k = min(int(self.settings.get("topk", 5)), probs.shape[1])
        names = self.settings.get("class_names")
        results = []
        for row in probs:
            top = np.argsort(-row, kind="stable")[:k]
            results.append([(int(i), names[i] if names and i < len(names) else f"class_{i}", float(row[i])) for i in top])
        return results

    @classmethod
    def to_tensors(cls, results: list) -> dict[str, np.ndarray]:
        return {"class_ids": np.array([[i for i, _, _ in top] for top in results], dtype=np.int64),
                "scores": np.array([[p for _, _, p in top] for top in results], dtype=np.float32),
                "class_names": np.array([[n.encode() for _, n, _ in top] for top in results], dtype=object)}

    @classmethod
    def from_tensors(cls, arrays: Mapping[str, np.ndarray]) -> list:
        return [[(int(i), name, float(p)) for i, name, p in zip(ids, text_values(names), scores)]
                for ids, names, scores in zip(arrays["class_ids"], arrays["class_names"], arrays["scores"])]

    def format_result(self, result) -> str:
        return "\n".join(f"  {rank}. {name} (class {idx}): {prob:.4f}"
                         for rank, (idx, name, prob) in enumerate(result[0], 1))

    def visualize(self, image, result, out_path: str | Path) -> None:
        from PIL import Image, ImageDraw

        im = Image.fromarray(as_rgb_array(image))
        draw = ImageDraw.Draw(im)
        for i, (idx, name, prob) in enumerate(result[0]):
            text = f"{name}: {prob:.3f}"
            y = 4 + 14 * i
            draw.rectangle([2, y - 1, 8 + 7 * len(text), y + 12], fill=(0, 0, 0))
            draw.text((5, y), text, fill=(255, 255, 0))
        from ..utils.fileio import atomic_write

        with atomic_write(out_path, "wb") as f:
            im.save(f, format="PNG" if str(out_path).lower().endswith(".png") else "JPEG")


def _last_linear_out(model) -> int | None:
    import torch

    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m.out_features
    return last
