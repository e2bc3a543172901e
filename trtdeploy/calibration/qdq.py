"""From calibration data to a Q/DQ graph, for every backend's INT8: activation ranges (cached in
``int8_ranges.json``), the samples' fit to the model's inputs, and ``quantized_graph`` for a placement
scheme (``passes.quantize.SCHEMES``, registered by each backend with a Q/DQ route)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import onnx

from ..config import DeployConfig, ShapeRange
from ..errors import ConfigError, DatasetError, ShapeError
from ..passes import quantize
from ..passes.lower_custom_ops import MIN_OPSET, model_opset, upgrade_opset
from ..utils.fileio import atomic_write_json, sha256_file
from ..utils.logging import logger
from .h5file import CalibrationFile

RANGES_FILE = "int8_ranges.json"


def calib_method(cfg: DeployConfig, default: str | None = None) -> str:
    """``calib_config.method``; unset, ``default`` (a backend's own calibrators have theirs), else
    quantize.DEFAULT_METHOD."""
    method = cfg.calib.get("method") or default or quantize.DEFAULT_METHOD
    quantize.RANGE_METHODS.get(method, field=f"{cfg.source}: calib_config.method")
    return method


def model_inputs(model: onnx.ModelProto) -> dict[str, tuple]:
    init = {i.name for i in model.graph.initializer}
    return {i.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
            for i in model.graph.input if i.name not in init}


def name_map(calib: CalibrationFile, inputs: Mapping[str, tuple]) -> dict[str, str]:
    """Model input name -> name in the calibration file (a single input may be named differently)."""
    if set(inputs) <= set(calib.input_names):
        return {n: n for n in inputs}
    if len(inputs) == 1 and len(calib.input_names) == 1:
        return {next(iter(inputs)): calib.input_names[0]}
    raise DatasetError(f"{calib.path} holds inputs {calib.input_names} but the model needs {list(inputs)}; "
                       f"collect the calibration data again (delete the file)")


def check_calibration_shapes(calib: CalibrationFile, inputs: Mapping[str, tuple],
                             profile: Mapping[str, ShapeRange]) -> None:
    """Every sample must fit the profile the engine is built (and calibrated) with."""
    names = name_map(calib, inputs)
    for model_name, file_name in names.items():
        shapes = calib.shapes(file_name)
        rng = profile.get(model_name) or ShapeRange(*(inputs[model_name],) * 3)
        free = {d for d, size in enumerate(rng.min) if size < 0}  # no profile, a dynamic dim (ONNX Runtime): any size
        if rng.is_static and not free and len(set(shapes)) > 1:
            sizes = sorted({"x".join(map(str, s)) for s in shapes})
            raise ShapeError(f"{calib.path}: calibration samples of {model_name!r} have differing sizes "
                             f"({', '.join(sizes[:3])}) but the engine profile is static "
                             f"{'x'.join(map(str, rng.min))}; resize them to one size in the calibration pipeline "
                             f"(Resize keep_ratio=False, or Pad size=...) or convert with a dynamic config")
        for i, shape in enumerate(shapes):
            if len(shape) != len(rng.min):
                raise ShapeError(f"{calib.path}: sample {i} of {model_name!r} has shape {list(shape)} but the model "
                                 f"input has rank {len(rng.min)}")
            for d, (lo, x, hi) in enumerate(zip(rng.min, shape, rng.max)):
                if d not in free and not lo <= x <= hi and not (d == 0 and x == 1):
                    raise ShapeError(f"{calib.path}: calibration sample {i} of {model_name!r} has shape {list(shape)}: "
                                     f"dimension {d} is {x}, outside the engine profile [{lo}, {hi}]; resize the "
                                     f"images in the calibration pipeline or widen backend_config.model_inputs")


def calibration_samples(calib_path: Path, inputs: Mapping[str, tuple]) -> Callable[[], Iterator[dict]]:
    """A re-iterable source of model feeds from the calibration file."""
    def samples() -> Iterator[dict]:
        with CalibrationFile(calib_path) as calib:
            names = name_map(calib, inputs)
            for sample in calib:
                yield {model_name: sample[file_name] for model_name, file_name in names.items()}
    return samples


def activation_ranges(model: onnx.ModelProto, targets: list[quantize.QuantTarget], calib_path: Path,
                      work_dir: Path, cfg: DeployConfig, tensors: Iterable[str] = (),
                      levels: Mapping[str, int] | None = None) -> dict[str, float]:
    """Ranges for the targets' activations and ``tensors`` (with ``levels`` quantization levels each), reused from
    ``int8_ranges.json`` when graph, data, method and levels match."""
    method = calib_method(cfg)
    options = {"percentile": cfg.calib.get("percentile", 99.99)}
    key = {"graph": graph_key(model), "calib_file": sha256_file(calib_path), "method": method, "options": options,
           "levels": dict(sorted((levels or {}).items()))}
    cache = work_dir / RANGES_FILE
    tensors = sorted({t.activation for t in targets} | set(tensors))
    if cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data["key"] == key and set(tensors) <= set(data["ranges"]):
                logger.info("reusing %s ranges from %s", method, cache)
                return {k: float(v) for k, v in data["ranges"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("ranges file %s is damaged (%s); computing the ranges again", cache, e)
    with CalibrationFile(calib_path) as calib:
        count = len(calib)
    ranges = quantize.collect_ranges(model, tensors, calibration_samples(calib_path, model_inputs(model)),
                                     method, options, count=count, levels=levels)
    atomic_write_json(cache, {"key": key, "method": method, "ranges": ranges})
    return ranges


def graph_key(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def quantized_graph(onnx_path: Path, work_dir: Path, cfg: DeployConfig, calib_path: Path,
                    scheme: str) -> tuple[onnx.ModelProto, list[quantize.QuantTarget], quantize.Placement]:
    """The Q/DQ graph of ``onnx_path`` for ``scheme``'s backend, with ranges from the calibration file."""
    model = onnx.load(str(onnx_path))
    if model_opset(model) < MIN_OPSET:  # an opset-11 file whose custom nodes were kept for plugins (not lowered)
        model = upgrade_opset(model, "per-channel Q/DQ")
    exclude = (cfg.calib.get("exclude_nodes") or (), cfg.calib.get("exclude_op_types") or ())
    targets = quantize.quantization_targets(model, *exclude,
                                            output_layers=bool(cfg.calib.get("quantize_output_layers", False)))
    if not targets and any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        raise ConfigError(f"{cfg.source}: INT8 quantizes float32 weights and {onnx_path.name} holds float16 ones (an "
                          f"FP16 export); export the model in FP32 (FP16 engines come from the FP16 configs)")
    if not targets:
        raise ConfigError(f"{cfg.source}: nothing to quantize: the graph has no Conv/Gemm/MatMul with constant "
                          f"weights outside calib_config.exclude_nodes/exclude_op_types")
    placement = quantize.place(model, targets, scheme, *exclude)
    levels = quantize.activation_levels(model, placement, scheme)
    ranges = activation_ranges(model, targets, calib_path, work_dir, cfg, placement.tensors, levels)
    bounded = placement.bounded(ranges)
    if kept := sorted(set(placement.edges) - set(bounded.edges)):
        logger.info("keeping %d activation(s) in float, their calibration values not finite (e.g. -inf padding) or "
                    "sharing a scale with such: %s", len(kept), ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""))
    return quantize.insert_qdq(model, targets, ranges, bounded, scheme), targets, bounded
