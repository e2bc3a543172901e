"""Read a COCO-format annotation file (``images``, ``annotations``, ``categories``).

Only the structure is checked here; what the annotations mean is the caller's business
(calibration needs the image list, evaluation needs boxes and categories too).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``: its id, the file it names, where that file resolved to."""

    id: int
    file_name: str
    path: Path
    width: int | None = None
    height: int | None = None


@dataclass
class CocoAnnotations:
    """A parsed COCO file: images (paths resolved), annotations grouped by image id, categories."""

    ann_file: Path
    images: list[CocoImage]
    annotations: dict[int, list[dict]] = field(default_factory=dict)
    categories: list[dict] = field(default_factory=list)

    def category_names(self) -> list[str]:
        return [c.get("name", str(c.get("id"))) for c in sorted(self.categories, key=lambda c: c.get("id", 0))]


def resolve_image_path(file_name: str, ann_file: Path, img_prefix: str | os.PathLike | None) -> Path:
    """Where an image named in an annotation file lives.

    With an ``img_prefix`` (MMDetection 2.x) or ``data_prefix.img`` (3.x) the name is joined to it.
    Without one, the name is tried beside the annotation file, then in the current directory;
    the first that exists wins (the annotation-relative path is returned when neither does).
    """
    name = Path(file_name)
    if name.is_absolute():
        return name
    if img_prefix:
        return Path(img_prefix) / name
    beside = ann_file.parent / name
    if beside.exists() or not name.exists():
        return beside
    return name


def load_coco(ann_file: str | os.PathLike, img_prefix: str | os.PathLike | None = None) -> CocoAnnotations:
    """Parse ``ann_file``; every structural problem is a DatasetError naming the file and field."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(f"annotation file {ann_file} does not exist; set ann_file (and data_root) in the "
                           f"dataset config to a COCO-format JSON file")
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"annotation file {ann_file} is not JSON ({e}); pass a COCO-format annotation file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"annotation file {ann_file} is not COCO JSON: it has no 'images' list; "
                           f"a COCO file holds {{'images': [{{'id': 1, 'file_name': 'a.jpg'}}, ...], ...}}")
    images = []
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise DatasetError(f"{ann_file}: images[{i}] has no 'file_name' string; every image entry needs one")
        images.append(CocoImage(int(entry.get("id", i)), entry["file_name"],
                                resolve_image_path(entry["file_name"], ann_file, img_prefix),
                                entry.get("width"), entry.get("height")))
    annotations: dict[int, list[dict]] = {}
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict) and "image_id" in ann:
            annotations.setdefault(int(ann["image_id"]), []).append(ann)
    return CocoAnnotations(ann_file, images, annotations, list(data.get("categories") or []))
