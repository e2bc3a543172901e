"""List the images of a folder, ImageNet style: ``root/<class>/<image>`` or a flat ``root/<image>``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderImage:
    """An image file and, when it sits in a class sub-folder, that class's index and name."""

    path: Path
    label: int | None = None
    class_name: str | None = None


def list_image_folder(root: str | os.PathLike) -> list[FolderImage]:
    """Images under ``root`` in a stable order; sub-folders are classes (sorted names -> 0, 1, ...)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a folder; set data_prefix to a folder of images")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [FolderImage(p) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    for label, name in enumerate(classes):
        found += [FolderImage(p, label, name) for p in sorted((root / name).rglob("*"))
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return found
