"""INT8 calibration data: dataset configs, transforms, the loader and the HDF5 calibration file.

``prepare_calibration_file`` is the one entry point: it finds the dataset (``--calib-dataset-cfg``,
else the deploy config's ``calib_config``), runs the pipeline over the images with workers and a
progress bar, and writes ``calib_data.h5`` in MMDeploy's layout; a second build with the same
images and pipeline reuses that file.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DeployConfig
from ..errors import ConfigError, DatasetError
from ..utils.logging import logger
from .dataset import (CalibrationDataset, DatasetSpec, dataset_spec, fingerprint, iterate_samples, list_images,
                      read_dataset_config)
from .h5file import COMPRESSIONS, CalibrationFile, encode_sample, write_calibration_file

__all__ = ["CalibrationDataset", "CalibrationFile", "DatasetSpec", "calibration_file_path",
           "prepare_calibration_file", "read_dataset_config", "resolve_dataset"]

DEFAULT_NUM_SAMPLES = 512
NO_DATASET_HINT = ("pass --calib-dataset-cfg FILE (e.g. a copy of configs/calibration/calibration_dataset.py with "
                   "data_root pointing at your images) or set calib_config.dataset_cfg='FILE' in the deploy config")


def calibration_file_path(cfg: DeployConfig, work_dir: str | os.PathLike) -> Path:
    """``calib_config.calib_file`` (default calib_data.h5), relative to the work dir as in MMDeploy."""
    name = cfg.calib.get("calib_file") or "calib_data.h5"
    if not isinstance(name, str):
        raise ConfigError(f"{cfg.source}: calib_config.calib_file must be a file name, got {name!r}")
    return Path(work_dir) / name


def resolve_dataset(cfg: DeployConfig, calib_dataset_cfg: str | os.PathLike | None) -> DatasetSpec | None:
    """The calibration dataset: the command line's file, else ``calib_config.dataset_cfg`` / ``calib_config.dataset``."""
    if calib_dataset_cfg is not None:
        return read_dataset_config(calib_dataset_cfg)
    path = cfg.calib.get("dataset_cfg")
    if path:
        path = Path(path)
        beside = Path(cfg.source).parent / path
        return read_dataset_config(path if path.exists() or not beside.exists() else beside)
    inline = cfg.calib.get("dataset")
    if inline is not None:
        if not isinstance(inline, dict):
            raise ConfigError(f"{cfg.source}: calib_config.dataset must be dict(type=..., pipeline=...), got {inline!r}")
        return dataset_spec({"data": {"val": inline, "samples_per_gpu": cfg.calib.get("samples_per_gpu", 1),
                                      "workers_per_gpu": cfg.calib.get("workers_per_gpu", 0)}},
                            f"{cfg.source}: calib_config.dataset")
    return None


def _num_samples(cfg: DeployConfig) -> int:
    n = cfg.calib.get("num_samples", DEFAULT_NUM_SAMPLES)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{cfg.source}: calib_config.num_samples must be an integer >= 1, got {n!r}")
    return n


def _compression(cfg: DeployConfig) -> str:
    value = cfg.calib.get("compression", "gzip")
    if value not in COMPRESSIONS:
        raise ConfigError(f"{cfg.source}: calib_config.compression must be one of {', '.join(map(repr, COMPRESSIONS))} "
                          f"('gzip': MMDeploy's filter, the default; 'none': raw, ~14x larger files), got {value!r}")
    return value


def _evenly_spaced(images: list[Path], n: int) -> list[Path]:
    if len(images) <= n:
        return images
    picks = np.linspace(0, len(images) - 1, n).round().astype(int)
    return [images[i] for i in picks]


def _reusable(path: Path, expected: str | None) -> bool:
    """True when ``path`` holds intact calibration data (made from ``expected``, when given)."""
    try:
        with CalibrationFile(path) as f:
            if expected is not None and f.fingerprint != expected:
                logger.info("%s was made from other images or another pipeline; collecting it again", path.name)
                return False
            f.check_readable()
            logger.info("reusing %s (%d samples of %s)%s", path, len(f), ", ".join(f.input_names),
                        "" if f.fingerprint else ", a calibration file trtdeploy did not write")
            return True
    except DatasetError as e:
        logger.warning("calibration file %s is damaged (%s); collecting the calibration data again", path, e)
        return False


def prepare_calibration_file(cfg: DeployConfig, work_dir: str | os.PathLike, input_name: str,
                             calib_dataset_cfg: str | os.PathLike | None = None,
                             fallback: Callable[[Path], np.ndarray] | None = None, fallback_key: str = "",
                             channels_last: bool = False) -> Path:
    """Make sure the calibration file exists and matches the dataset; returns its path.

    ``fallback`` pre-processes an image when the dataset has no pipeline (the task's own
    pre-processing); ``fallback_key`` names it in the fingerprint. ``channels_last``: the model takes
    [N, H, W, C], so the pipeline's samples are stored HWC.
    """
    path = calibration_file_path(cfg, work_dir)
    spec = resolve_dataset(cfg, calib_dataset_cfg)
    create = cfg.calib.get("create_calib", True)
    if spec is None or not create:
        if path.is_file() and _reusable(path, None):
            return path
        if not create:
            raise DatasetError(f"{cfg.source}: calib_config.create_calib is False but {path} is missing or damaged; "
                               f"put an MMDeploy calib_data.h5 there or set create_calib=True and {NO_DATASET_HINT}")
        raise ConfigError(f"{cfg.source}: INT8 (int8_mode) needs calibration images and none are configured: "
                          f"{NO_DATASET_HINT}")
    encode = functools.partial(encode_sample, compression=_compression(cfg))
    images = list_images(spec)
    if not images:
        raise DatasetError(f"{spec.where}: the calibration set is empty (no images listed); add images or fix ann_file/data_prefix")
    wanted = _evenly_spaced(images, _num_samples(cfg))
    if len(wanted) < len(images):
        logger.info("calibrating with %d of the %d images (calib_config.num_samples)", len(wanted), len(images))
    key = fingerprint(spec, wanted, (fallback_key if spec.pipeline is None else "") + (" HWC" if channels_last else ""))
    if path.is_file() and _reusable(path, key):
        return path
    dataset = CalibrationDataset(wanted, spec.pipeline, spec.where, spec.preprocessor, fallback, channels_last)
    count = write_calibration_file(path, input_name, _good_samples(dataset, spec, encode), key)
    logger.info("wrote %d calibration samples to %s", count, path)
    return path


def _good_samples(dataset: CalibrationDataset, spec: DatasetSpec, encode: Callable):
    """Samples in order, ``encode``d in the workers; unreadable images are skipped, counted and named
    (all unreadable is an error)."""
    failures: list[str] = []
    produced = 0
    for _, arrays, error in iterate_samples(dataset, spec.batch_size, spec.workers, encode=encode):
        if error is not None:
            failures.append(error)
            continue
        for arr in arrays:
            produced += 1
            yield arr
    if failures:
        first = "; ".join(failures[:3])
        if not produced:
            raise DatasetError(f"{spec.where}: none of the {len(dataset)} calibration images could be read "
                               f"(first: {first}); check data_root/img_prefix and the files")
        logger.warning("%d of %d calibration images could not be read and were skipped (first: %s)",
                       len(failures), len(dataset), first)
