"""Task-neutral readers for image sets on disk: COCO-style annotation files and image folders.

Calibration (INT8) and evaluation (``trtdeploy test``) both read images through these,
so a path that works for one works for the other.
"""
from .coco import CocoAnnotations, CocoImage, load_coco
from .image_folder import IMAGE_SUFFIXES, FolderImage, list_image_folder

__all__ = ["CocoAnnotations", "CocoImage", "load_coco", "IMAGE_SUFFIXES", "FolderImage", "list_image_folder"]
