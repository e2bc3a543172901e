"""Calibration datasets from OpenMMLab-style dataset configs, and a loader with workers.

A dataset config (the file given to ``--calib-dataset-cfg``) is read with the same library as
deploy configs. The dataset comes from ``data.val`` (then ``data.test``; MMDetection 2.x) or
``val_dataloader.dataset`` (then ``test_dataloader``; 3.x). Its ``type`` picks how images are
listed: a COCO-style ``ann_file`` or a folder of images.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from ..config.deploy_config import read_config_file
from ..datasets import list_image_folder, load_coco
from ..errors import ConfigError, TrtDeployError
from ..registry import Registry
from ..utils.logging import progress
from .transforms import Compose

IMAGE_LISTERS: Registry[Callable[[Mapping, str], list[Path]]] = Registry("calibration dataset type")

# Where datasets sit in MMDetection 2.x (data.*) and 3.x (*_dataloader.dataset) configs, in order of preference.
SECTIONS = (("data", "val"), ("data", "test"), ("val_dataloader", "dataset"), ("test_dataloader", "dataset"))

# Used when a 3.x pipeline packs raw pixels and the config has no model.data_preprocessor.
DEFAULT_PREPROCESSOR = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


def _join(root, path) -> str:
    if not path:
        return path
    return str(Path(root) / path) if root and not Path(path).is_absolute() else str(path)


def _img_prefix(cfg: Mapping) -> str | None:
    prefix = cfg.get("img_prefix")
    if prefix is None and isinstance(cfg.get("data_prefix"), Mapping):
        prefix = cfg["data_prefix"].get("img") or cfg["data_prefix"].get("img_path")
    elif prefix is None:
        prefix = cfg.get("data_prefix")
    return _join(cfg.get("data_root"), prefix) if prefix else None


@IMAGE_LISTERS.register("CalibrationDataset")
@IMAGE_LISTERS.register("CocoDataset")
def coco_images(cfg: Mapping, where: str) -> list[Path]:
    """Images listed by a COCO-style ``ann_file`` (3.x: relative to ``data_root``)."""
    ann_file = cfg.get("ann_file")
    if not ann_file:
        raise ConfigError(f"{where}.ann_file is missing; name a COCO-format JSON file listing the calibration images")
    if cfg.get("data_root") and not Path(ann_file).exists():
        ann_file = _join(cfg["data_root"], ann_file)
    return [img.path for img in load_coco(ann_file, _img_prefix(cfg)).images]


@IMAGE_LISTERS.register("ImageFolder")
@IMAGE_LISTERS.register("CustomDataset")
@IMAGE_LISTERS.register("ImageNet")
def folder_images(cfg: Mapping, where: str) -> list[Path]:
    """Every image under ``data_prefix`` (or ``data_root``), class sub-folders included."""
    root = _img_prefix(cfg) or cfg.get("data_root")
    if not root:
        raise ConfigError(f"{where}: set data_prefix (or data_root) to the folder of calibration images")
    return [img.path for img in list_image_folder(root)]


@dataclass
class DatasetSpec:
    """The dataset section of a config, where it came from, and the loader settings beside it."""

    cfg: dict
    where: str                  # e.g. "calibration_dataset.py: data.val"
    batch_size: int = 1
    workers: int = 0
    preprocessor: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESSOR))

    @property
    def pipeline(self) -> list | None:
        return self.cfg.get("pipeline")


def _positive_int(value, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def dataset_spec(raw: Mapping, source: str) -> DatasetSpec:
    """Find the dataset section of a dataset (or model) config and its loader settings."""
    for outer, inner in SECTIONS:
        section = raw.get(outer)
        if isinstance(section, Mapping) and isinstance(section.get(inner), Mapping):
            where = f"{source}: {outer}.{inner}"
            if outer == "data":
                batch = section.get("samples_per_gpu", 1)
                workers = section.get("workers_per_gpu", 0)
                names = ("data.samples_per_gpu", "data.workers_per_gpu")
            else:
                batch, workers = section.get("batch_size", 1), section.get("num_workers", 0)
                names = (f"{outer}.batch_size", f"{outer}.num_workers")
            pre = ((raw.get("model") or {}).get("data_preprocessor") or {}) if isinstance(raw.get("model"), Mapping) else {}
            preprocessor = {**DEFAULT_PREPROCESSOR, **{k: pre[k] for k in ("mean", "std", "bgr_to_rgb") if k in pre}}
            return DatasetSpec(dict(section[inner]), where, _positive_int(batch, f"{source}: {names[0]}", 1),
                               _positive_int(workers, f"{source}: {names[1]}", 0), preprocessor)
    raise ConfigError(f"{source} defines no dataset: it needs data=dict(val=dict(type=..., ann_file=..., pipeline=...)) "
                      f"(MMDetection 2.x) or val_dataloader=dict(dataset=dict(...)) (3.x); "
                      f"see configs/calibration/calibration_dataset.py")


def read_dataset_config(path: str | os.PathLike) -> DatasetSpec:
    """Read a ``--calib-dataset-cfg`` file with the deploy-config reader."""
    path = Path(path)
    return dataset_spec(read_config_file(path), str(path))


def list_images(spec: DatasetSpec) -> list[Path]:
    kind = spec.cfg.get("type", "CalibrationDataset")
    return IMAGE_LISTERS.get(kind, field=f"{spec.where}.type")(spec.cfg, spec.where)


class CalibrationDataset:
    """Images run through a pipeline into model inputs: ``dataset[i]`` is a list of CHW float32 arrays (HWC for a
    ``channels_last`` model; ``fallback`` writes the model's layout itself).

    A pipeline yields several arrays per image under test-time augmentation (flip=True).
    Without a pipeline, ``fallback`` (the task's own pre-processing) turns a path into one array.
    """

    def __init__(self, images: list[Path], pipeline: list | None, where: str,
                 preprocessor: Mapping | None = None, fallback: Callable[[Path], np.ndarray] | None = None,
                 channels_last: bool = False):
        self.images, self.where = images, where
        self.channels_last = channels_last  # the model takes HWC: the pipeline's CHW arrays are transposed
        self.compose = Compose(pipeline, f"{where}.pipeline") if pipeline is not None else None
        if self.compose is None and fallback is None:
            raise ConfigError(f"{where}.pipeline is missing; give the test pipeline the model was trained with")
        self.preprocessor = dict(preprocessor or DEFAULT_PREPROCESSOR)
        self.fallback = fallback

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[np.ndarray]:
        from ..errors import DatasetError
        from ..passes.numerics import nonfinite_count

        path = self.images[index]
        if self.compose is None:
            arr = np.asarray(self.fallback(path), dtype=np.float32)
            arrays = [np.ascontiguousarray(arr.reshape(arr.shape[-3:]))]
        else:
            out = self.compose({"img_path": str(path), "filename": str(path), "sample_idx": index})
            arrays = [self._to_array(r) for r in (out if isinstance(out, list) else [out])]
            if self.channels_last:
                arrays = [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arrays]
        for arr in arrays:  # a NaN sample would make every range it touches NaN
            if nonfinite_count(arr):
                raise DatasetError(f"{path}: its calibration sample holds {nonfinite_count(arr)} after the pipeline "
                                   f"of {self.where}; fix the image or the pipeline (a Normalize std of 0 divides by zero)")
        return arrays

    def _to_array(self, results: Mapping) -> np.ndarray:
        img = np.asarray(results["img"])
        if not results.get("chw"):
            img = (img[..., None] if img.ndim == 2 else img).transpose(2, 0, 1)
        img = np.ascontiguousarray(img, dtype=np.float32)  # one copy (the CHW transpose, when there is one)
        if results.get("packed") and "img_norm_cfg" not in results:
            pre = self.preprocessor
            if pre.get("bgr_to_rgb") and img.shape[0] == 3:
                img = img[::-1]
            img = (img - np.asarray(pre["mean"], np.float32)[:, None, None]) / np.asarray(pre["std"], np.float32)[:, None, None]
        return np.ascontiguousarray(img)  # no copy unless the packed branch flipped channels


def fingerprint(spec: DatasetSpec, images: list[Path], extra: str = "") -> str:
    """Changes when the images, their files, the pipeline or the settings change."""
    h = hashlib.sha256(json.dumps([spec.cfg, spec.preprocessor, extra], sort_keys=True, default=str).encode())
    for p in images:
        try:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


def _load_one(dataset: CalibrationDataset, index: int):
    try:
        return index, dataset[index], None
    except TrtDeployError as e:
        return index, None, str(e)
    except Exception as e:  # a damaged image must not stop calibration; it is counted and named
        return index, None, f"{dataset.images[index]}: {type(e).__name__}: {e}"


class _Indexed:
    """torch's DataLoader wants a Dataset; this one returns (index, arrays, error) and never raises.

    ``encode`` (e.g. ``h5file.encode_sample``) runs on each array inside the worker, beside the decoding.
    """

    def __init__(self, dataset: CalibrationDataset, encode: Callable | None = None):
        self.dataset = dataset
        self.encode = encode

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        index, arrays, error = _load_one(self.dataset, index)
        if arrays is not None and self.encode is not None:
            arrays = [self.encode(a) for a in arrays]
        return index, arrays, error


def _keep_freed_memory(worker_id: int = 0) -> None:
    """In a loader worker: let glibc's malloc reuse freed images instead of returning them to the system.

    Each image passes through several fresh ~10 MB arrays; when malloc maps and unmaps each one,
    every page is faulted in again (about a third of the pipeline's time on a 2-core VM). The
    worker ends with the loader, so the memory it keeps is given back then. Elsewhere: nothing.
    """
    import ctypes
    import ctypes.util
    import sys

    libc = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    mallopt = getattr(ctypes.CDLL(libc), "mallopt", None) if libc else None
    if mallopt is not None:
        mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep freed memory at the top of the heap
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: allocations up to 32 MB come from the heap, reused


def iterate_samples(dataset: CalibrationDataset, batch_size: int = 1, workers: int = 0,
                    desc: str = "calibration images", encode: Callable | None = None) -> Iterator[tuple]:
    """Yield ``(index, arrays, error)`` in order, loading with ``workers`` processes, with a progress bar.

    ``encode`` turns each array into what the consumer stores, in the workers (see ``_Indexed``).
    """
    from torch.utils.data import DataLoader
    loader = DataLoader(_Indexed(dataset, encode), batch_size=batch_size, num_workers=workers, shuffle=False,
                        collate_fn=list, persistent_workers=False, worker_init_fn=_keep_freed_memory)
    with progress(total=len(dataset), desc=desc, unit="img") as bar:
        for batch in loader:
            for item in batch:
                yield item
            bar.update(len(batch))
