"""Semantic segmentation (FCN, DeepLabV3, LRASPP): the graph ends in a per-pixel class map.

Like MMDeploy's mmseg configs, ``codebase_config.with_argmax`` (default True) puts the
ArgMax inside the graph, so the output ``output`` is an int64 class map [N, 1, H, W];
with False it is the score map [N, C, H, W] and the ArgMax happens here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ModelError
from ..utils.fileio import atomic_write
from ..utils.image import as_rgb_array
from .base import TASKS, Task, fit_image
from .classification import IMAGENET_MEAN, IMAGENET_STD
from .detection import class_palette, detector_classes


def voc_categories() -> list[str]:
    from torchvision.models.segmentation import FCN_ResNet50_Weights

    return list(FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])


@TASKS.register("Segmentation")
class Segmentation(Task):
    name = "Segmentation"
    default_input_shape = (1, 3, 512, 512)

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
        if isinstance(model, detector_classes()):
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
