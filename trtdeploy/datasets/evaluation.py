"""Test sets for ``trtdeploy test``: an image folder (``root/<class>/<image>``) or a COCO JSON file.

Reading is the task-neutral readers beside this module; this one adds what evaluation needs on top:
ground truth per image, and the mapping from dataset classes to the model's label indices, which the
tasks' metrics use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .coco import CocoAnnotations, load_coco
from .image_folder import list_image_folder
from ..errors import DatasetError


@dataclass(frozen=True)
class EvalSample:
    """One test image and its ground truth: a class index (image folder) or a COCO image id."""

    path: Path
    label: int | None = None
    image_id: int | None = None


@dataclass
class EvalDataset:
    """The samples, and the class names in the dataset's own order (folder names or COCO categories)."""

    source: str
    samples: list[EvalSample]
    class_names: list[str] = field(default_factory=list)
    coco: CocoAnnotations | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def head(self, n: int | None) -> "EvalDataset":
        return self if n is None else EvalDataset(self.source, self.samples[:n], self.class_names, self.coco)


def open_dataset(path: str | os.PathLike, img_prefix: str | os.PathLike | None = None) -> EvalDataset:
    """A folder of class sub-folders, or a COCO annotation file (images under ``img_prefix`` or beside it)."""
    path = Path(path)
    if path.is_dir():
        images = list_image_folder(path)
        labelled = [im for im in images if im.label is not None]
        if not labelled:
            raise DatasetError(f"image folder {path} has no class sub-folders with images; lay it out as "
                               f"{path}/<class name>/<image>.jpg (sorted folder names are classes 0, 1, ...)")
        names = sorted({im.class_name for im in labelled})
        return EvalDataset(str(path), [EvalSample(im.path, im.label) for im in labelled], names)
    if path.suffix.lower() == ".json":
        coco = load_coco(path, img_prefix)
        if not coco.images:
            raise DatasetError(f"{path} lists no images; a COCO test set needs 'images' and 'annotations'")
        missing = [im.path for im in coco.images if not im.path.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of {len(coco.images)} images of {path} do not exist (first: {missing[0]}); "
                               f"pass --img-prefix with the folder that holds them")
        if not coco.categories:
            raise DatasetError(f"{path} has no 'categories'; a COCO test set names its classes there")
        return EvalDataset(str(path), [EvalSample(im.path, image_id=im.id) for im in coco.images],
                           coco.category_names(), coco)
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist; pass an image folder (<class>/<image>) or a COCO JSON file")
    raise DatasetError(f"dataset {path} is neither a folder nor a .json file; pass an image folder "
                       f"(<class>/<image>) or a COCO annotation file")


def model_index_by_name(dataset_names: Sequence[str], model_names: Sequence[str] | None) -> dict[str, int] | None:
    """Dataset class name -> model label index, when every dataset class is one of the model's classes."""
    if not model_names:
        return None
    index = {name: i for i, name in enumerate(model_names)}
    return {name: index[name] for name in dataset_names} if all(n in index for n in dataset_names) else None


def coco_category_of_label(coco: CocoAnnotations, model_names: Sequence[str] | None) -> dict[int, int]:
    """Model label -> COCO category id: by class name when the names match, else the label is the id."""
    by_name = model_index_by_name([c["name"] for c in coco.categories if "name" in c], model_names)
    if by_name is None:
        return {int(c["id"]): int(c["id"]) for c in coco.categories}
    return {by_name[c["name"]]: int(c["id"]) for c in coco.categories if "name" in c}


def coco_class_map(coco: CocoAnnotations, image_id: int, shape: tuple[int, int], category_to_class: dict[int, int],
                   ignore_index: int = 255) -> np.ndarray:
    """A semantic class map from an image's COCO polygons/RLEs: background 0, crowds ``ignore_index``."""
    from pycocotools import mask as mask_utils

    h, w = shape
    class_map = np.zeros((h, w), np.int64)
    for ann in coco.annotations.get(image_id, []):
        seg = ann.get("segmentation")
        if not seg:
            continue
        rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) or isinstance(seg.get("counts"), list) else seg
        mask = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles).astype(bool)
        class_map[mask] = ignore_index if ann.get("iscrowd") else category_to_class.get(int(ann["category_id"]), ignore_index)
    return class_map
