"""INT8 for the TensorRT backend, by one of two routes chosen from what the installed TensorRT can do.

- ``explicit``: trtdeploy computes activation ranges on ONNX Runtime from the calibration file and
  writes a Q/DQ graph (``qdq_scheme.py``) that TensorRT builds as is. The only route on TensorRT 11
  and TensorRT-RTX; on 8.6-10 it needs BuilderFlag.INT8 set beside the graph's Q/DQ.
- ``implicit``: TensorRT <= 10 calibrates itself (BuilderFlag.INT8 + an entropy or minmax calibrator
  fed from the calibration file) and keeps its calibration cache.

``common_config.explicit_quantization`` (True / False / None = automatic) picks the route.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import onnx

from ...calibration import CalibrationFile, calibration_file_path
from ...calibration.qdq import (RANGES_FILE, calib_method, calibration_samples, check_calibration_shapes,
                               model_inputs, quantized_graph)
from ...config import DeployConfig, ShapeRange
from ...errors import BackendUnavailableError, ConfigError, DatasetError
from ...passes import quantize
from ...registry import Registry
from ...utils.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from ...utils.logging import logger
from .compat import TensorRT
from .qdq_scheme import SCHEME

DEFAULT_CACHE = "calib_cache.bin"
IMPLICIT_METHODS = ("entropy", "minmax")  # what TensorRT's own calibrators implement


@dataclass
class Int8Plan:
    """What the build needs for INT8: the graph to parse, a hook for the builder config, sidecar facts."""

    onnx_path: Path
    configure: Callable | None = None   # configure(builder, builder_config, network), called before the build
    facts: dict = field(default_factory=dict)


def has_explicit_int8(trt: TensorRT) -> bool:
    """Q/DQ graphs build in strongly typed networks, or in weakly typed ones with BuilderFlag.INT8."""
    return ("STRONGLY_TYPED" in trt.module.NetworkDefinitionCreationFlag.__members__
            or "INT8" in trt.module.BuilderFlag.__members__)


def choose_route(trt: TensorRT, cfg: DeployConfig) -> str:
    """``explicit`` or ``implicit``; raises when the config asks for a route this TensorRT lacks."""
    wanted = cfg.common.get("explicit_quantization")
    method = calib_method(cfg) if cfg.calib.get("method") else None  # None: each route's default
    if not has_explicit_int8(trt) and not trt.has_implicit_int8:
        raise BackendUnavailableError(f"{trt.label} has no INT8 support (neither Q/DQ graphs nor calibrators); "
                                      f"install TensorRT >= 8.6 or TensorRT-RTX, or drop common_config.int8_mode")
    if wanted is False:
        if not trt.has_implicit_int8:
            raise BackendUnavailableError(
                f"{cfg.source}: common_config.explicit_quantization=False asks for implicit calibration, which "
                f"{trt.label} does not have (removed with BuilderFlag.INT8 in TensorRT 11); remove the option to "
                f"quantize explicitly with Q/DQ nodes")
        if method is not None and method not in IMPLICIT_METHODS:
            raise ConfigError(f"{cfg.source}: calib_config.method={method!r} exists only for explicit quantization; "
                              f"use {' or '.join(IMPLICIT_METHODS)} or set common_config.explicit_quantization=True")
        return "implicit"
    if wanted is None and trt.has_implicit_int8 and not trt.strongly_typed_only and method in (None, *IMPLICIT_METHODS):
        return "implicit"
    if not has_explicit_int8(trt):
        raise BackendUnavailableError(f"{trt.label} cannot build Q/DQ graphs; set common_config.explicit_quantization=False")
    return "explicit"


# -- calibration samples ------------------------------------------------------------------
# -- explicit route -----------------------------------------------------------------------
def _explicit(trt: TensorRT, onnx_path: Path, work_dir: Path, cfg: DeployConfig, strongly_typed: bool,
              profile: Mapping[str, ShapeRange], calib_path: Path) -> Int8Plan:
    qdq, targets, placement = quantized_graph(onnx_path, work_dir, cfg, calib_path, SCHEME)
    fp32_path = work_dir / f"{onnx_path.stem}_int8.onnx"
    atomic_write_bytes(fp32_path, qdq.SerializeToString())
    build_path = fp32_path
    keep_fp32 = list(cfg.calib.get("fp32_nodes") or ())
    if cfg.fp16 and strongly_typed:
        build_path = work_dir / f"{onnx_path.stem}_int8_fp16.onnx"
        atomic_write_bytes(build_path, quantize.to_fp16_keeping_qdq(qdq, keep_fp32).SerializeToString())
    logger.info("quantized %d of the graph's layers and %d activations to INT8 (%s ranges)%s", len(targets),
                len(placement.edges), calib_method(cfg), ", FP16 elsewhere" if cfg.fp16 else "")

    def configure(builder, builder_config, network) -> None:
        if not strongly_typed:  # weakly typed TensorRT reads Q/DQ only with the INT8 flag
            builder_config.set_flag(trt.module.BuilderFlag.INT8)
            _keep_precision(trt, builder_config, network, keep_fp32, trt.module.DataType.FLOAT)

    return Int8Plan(build_path, configure, {
        "int8": {"route": "explicit", "method": calib_method(cfg), "quantized_layers": [t.node for t in targets],
                 "quantized_tensors": placement.tensors,
                 "calib_file": calib_path.name, "ranges_file": RANGES_FILE, "fp32_nodes": keep_fp32},
        "check_with": fp32_path.name})


def _keep_precision(trt: TensorRT, builder_config, network, patterns, dtype) -> list[str]:
    """Weakly typed networks: pin matching layers to ``dtype`` and make the builder obey."""
    kept = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if quantize.matches_any(layer.name, patterns):
            layer.precision = dtype
            kept.append(layer.name)
    if kept:
        builder_config.set_flag(trt.module.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return kept


# -- implicit route -----------------------------------------------------------------------
def fit_to_shape(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Crop or zero-pad (bottom/right) every dimension but the batch to ``shape``."""
    out = np.zeros((arr.shape[0], *shape[1:]), dtype=np.float32)
    region = tuple(slice(0, min(a, s)) for a, s in zip(arr.shape[1:], shape[1:]))
    out[(slice(None), *region)] = arr[(slice(None), *region)]
    return out


class CalibrationBatches:
    """Batches at the calibration profile's opt shape (what TensorRT's calibrator is asked for)."""

    def __init__(self, samples: Callable[[], Iterator[dict]], opt_shapes: Mapping[str, tuple[int, ...]]):
        self.samples = samples
        self.opt_shapes = dict(opt_shapes)
        self.batch_size = next(iter(self.opt_shapes.values()))[0]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict] = []
        for feed in self.samples():
            pending.append(feed)
            if len(pending) == self.batch_size:
                yield self._stack(pending)
                pending = []
        if pending:  # a last, short batch is repeated up to the batch size rather than dropped
            yield self._stack((pending * self.batch_size)[:self.batch_size])

    def _stack(self, feeds: list[dict]) -> dict[str, np.ndarray]:
        return {name: np.concatenate([fit_to_shape(f[name], shape) for f in feeds])[:shape[0]]
                for name, shape in self.opt_shapes.items()}


class CalibrationCache:
    """TensorRT's calibration cache file, valid only for the calibration data and method it was made from."""

    def __init__(self, path: Path, key: Mapping):
        self.path, self.key = path, dict(key)
        self.key_path = path.with_name(path.name + ".json")

    def read(self) -> bytes | None:
        if not self.path.is_file():
            return None
        try:
            same = json.loads(self.key_path.read_text()) == self.key
            data = self.path.read_bytes()
        except (OSError, ValueError) as e:
            logger.warning("calibration cache %s is unreadable (%s); calibrating again", self.path, e)
            return None
        if not same:
            logger.info("calibration cache %s was made from other data; calibrating again", self.path.name)
            return None
        if not _looks_like_trt_cache(data):
            logger.warning("calibration cache %s is damaged; calibrating again", self.path)
            return None
        logger.info("reusing calibration cache %s", self.path)
        return data

    def write(self, data: bytes) -> None:
        atomic_write_bytes(self.path, bytes(data))
        atomic_write_json(self.key_path, self.key)


def _looks_like_trt_cache(data: bytes) -> bool:
    """``TRT-<version>-<Calibrator>`` then ``tensor: hex scale`` lines."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return False
    if not lines or not lines[0].startswith("TRT-"):
        return False
    for line in lines[1:]:
        name, sep, value = line.rpartition(": ")
        if not sep or not name:
            return False
        try:
            int(value, 16)
        except ValueError:
            return False
    return True


def _torch_device_buffer(arr: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr)).cuda()


def make_calibrator(trt: TensorRT, method: str, batches: CalibrationBatches, cache: CalibrationCache,
                    to_device: Callable[[np.ndarray], object] = _torch_device_buffer):
    """An IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator that feeds ``batches`` (device copies via ``to_device``)."""
    base = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}[method]
    parent = getattr(trt.module, base)

    class Calibrator(parent):
        def __init__(self):
            parent.__init__(self)
            self._batches = iter(batches)
            self._on_device: dict = {}   # keeps device memory alive until the next batch

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names, *args):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._on_device = {n: to_device(batch[n]) for n in names}
            return [int(self._on_device[n].data_ptr()) for n in names]

        def read_calibration_cache(self, *args):
            return cache.read()

        def write_calibration_cache(self, data, *args) -> None:
            cache.write(data)

    return Calibrator()


def _implicit(trt: TensorRT, onnx_path: Path, work_dir: Path, cfg: DeployConfig, strongly_typed: bool,
              profile: Mapping[str, ShapeRange], calib_path: Path) -> Int8Plan:
    method = calib_method(cfg, IMPLICIT_METHODS[0])
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = model_inputs(model)
    opt = {name: tuple(profile[name].opt) if name in profile else inputs[name] for name in inputs}
    batches = CalibrationBatches(calibration_samples(calib_path, inputs), opt)
    cache_path = work_dir / (cfg.calib.get("calib_cache") or DEFAULT_CACHE)
    cache = CalibrationCache(cache_path, {"calib_file": sha256_file(calib_path), "method": method,
                                          "onnx": sha256_file(onnx_path), "tensorrt": trt.version})
    skip = list(cfg.calib.get("exclude_nodes") or ())
    keep_fp32 = list(cfg.calib.get("fp32_nodes") or ())

    def configure(builder, builder_config, network) -> None:
        builder_config.set_flag(trt.module.BuilderFlag.INT8)
        builder_config.int8_calibrator = make_calibrator(trt, method, batches, cache)
        # Calibration runs at one shape: the opt shapes, which CalibrationBatches feeds.
        calibration_profile = builder.create_optimization_profile()
        for name, shape in opt.items():
            calibration_profile.set_shape(name, shape, shape, shape)
        builder_config.set_calibration_profile(calibration_profile)
        higher = trt.module.DataType.HALF if cfg.fp16 else trt.module.DataType.FLOAT
        _keep_precision(trt, builder_config, network, skip, higher)
        _keep_precision(trt, builder_config, network, keep_fp32, trt.module.DataType.FLOAT)

    return Int8Plan(onnx_path, configure, {"int8": {"route": "implicit", "method": method,
                                                    "calib_file": calib_path.name, "calib_cache": cache_path.name,
                                                    "exclude_nodes": skip, "fp32_nodes": keep_fp32}})


def prepare_int8(trt: TensorRT, onnx_path: Path, work_dir: Path, cfg: DeployConfig, strongly_typed: bool,
                 profile: Mapping[str, ShapeRange]) -> Int8Plan:
    """Check the calibration data against ``profile`` (the engine's first) and prepare the chosen route."""
    route = choose_route(trt, cfg)
    if route == "implicit" and strongly_typed:
        raise ConfigError(f"{cfg.source}: implicit INT8 calibration needs a weakly typed network; "
                          f"remove common_config.strongly_typed=True or set explicit_quantization=True")
    calib_path = calibration_file_path(cfg, work_dir)
    if not calib_path.is_file():
        raise DatasetError(f"{calib_path} does not exist; run `trtdeploy convert` with --calib-dataset-cfg to collect it")
    model = onnx.load(str(onnx_path), load_external_data=False)
    with CalibrationFile(calib_path) as calib:
        check_calibration_shapes(calib, model_inputs(model), profile)
    logger.info("INT8 by %s quantization (%s)", route, trt.label)
    return INT8_ROUTES.get(route)(trt, onnx_path, work_dir, cfg, strongly_typed, profile, calib_path)


INT8_ROUTES: Registry[Callable[..., Int8Plan]] = Registry("INT8 route")
INT8_ROUTES.register("explicit")(_explicit)
INT8_ROUTES.register("implicit")(_implicit)

