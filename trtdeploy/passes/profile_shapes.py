"""Refuse optimization profiles the graph cannot serve, before the (slow) build.

TensorRT builds an engine for any profile and fails only at run time, or not at all, when the
graph cannot run at a profile's edges: a ViT with a fixed position embedding under a 224-320
profile builds, and its own graph cannot run above 224. We try each profile at its min and max.

Guarantee: ``check_profile_shapes`` returns only when, for every profile, the graph runs at the
min shape and at the max shape (spatial and other dims at max, the batch dim at min: a batch
changes nothing a graph can or cannot run, and this bounds the memory the check takes). It is
proven first by ONNX shape inference in strict mode, which is free; when inference cannot give
every intermediate tensor a static shape (shapes computed through Expand, Where, ...) the graph
is run once per edge on ONNX Runtime with zeros (not when it holds custom nodes, whose ONNX Runtime
ops may be missing: then the inference result stands). A refusal is one ShapeError naming the profile,
the input dimension and the node that fails.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np
import onnx

from ..config import ShapeRange
from ..errors import ShapeError
from ..utils.logging import logger
from ..utils.onnx_graph import all_nodes, weightless

def _with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims, shapes[value.name]):
                d.Clear()
                d.dim_value = int(size)
    return fixed


def _inference_verdict(light: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> tuple[bool, str | None]:
    """(proven, failure): strict shape inference at ``shapes``; proven when every tensor got a static shape."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_with_input_shapes(light, shapes), strict_mode=True,
                                                     data_prop=True)
    except Exception as e:  # InferenceError / ShapeInferenceError
        return True, _node_reason(str(e), INFERENCE_ERROR)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    static = all(v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
                 and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim) for v in values)
    return static, None


# (op type, node name, message) in onnx's shape-inference errors and in ONNX Runtime's run failures (without ONNX
# Runtime's failed-assertion text and source location)
INFERENCE_ERROR = r"\(op_type:(\S+), node name: ([^)]*)\): (?:\[\w+\] )?(.*)"
ORT_ERROR = r"running (\S+) node\. Name:'([^']*)' Status Message: (?:.*? was false\. )?(?:\S+\.(?:h|cc|cpp):\d+ )?(.*)"


def _node_reason(text: str, pattern: str) -> str:
    """A checker's error as "node '/Add' (Add): Incompatible dimensions" (``pattern``'s groups), else its text."""
    text = " ".join(text.split())
    found = re.search(pattern, text)
    if not found:
        return text[:300]
    op, name, message = found.groups()
    return f"node {name!r} ({op}): {message[:300]}"


def _ort_failure(model: onnx.ModelProto, session_cache: dict, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Run ``model`` on ONNX Runtime with zeros of ``shapes``; the error text, or None when it runs."""
    import onnxruntime as ort

    if "session" not in session_cache:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session_cache["session"] = ort.InferenceSession(model.SerializeToString(), opts,
                                                        providers=["CPUExecutionProvider"])
    session = session_cache["session"]
    types = {i.name: i.type for i in session.get_inputs()}
    feed = {name: np.zeros(shape, _ORT_TYPES.get(types[name], np.float32)) for name, shape in shapes.items()}
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4  # the failure is ours to report, once
    try:
        session.run(None, feed, run_options)
    except Exception as e:
        return _node_reason(str(e), ORT_ERROR)
    return None


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
              "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def _edges(rng: ShapeRange) -> dict[str, tuple[int, ...]]:
    return {"min_shape": rng.min, "max_shape": (rng.min[0], *rng.max[1:]) if len(rng.max) > 1 else rng.max}


def check_profile_shapes(model: onnx.ModelProto, profiles: list[dict[str, ShapeRange]], source: str) -> None:
    """Raise ShapeError for the first profile edge the graph cannot run at (see the module doc)."""
    ranges = [p for p in profiles if any(not r.is_static for r in p.values())]
    if not ranges:
        return  # a static profile is the graph's own shape, which the checker and the parser see
    light = weightless(model)
    session_cache: dict = {}
    custom = any(n.domain not in ("", "ai.onnx") for n in all_nodes(model.graph))

    def failure(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        proven, problem = _inference_verdict(light, shapes)
        if problem is not None or proven:
            return problem
        if custom:
            logger.debug("shape inference leaves dynamic tensors at %s and the graph has custom nodes: "
                         "the profile is not checked further", shapes)
            return None
        logger.debug("shape inference leaves dynamic tensors at %s; running the graph on ONNX Runtime", shapes)
        return _ort_failure(model, session_cache, shapes)

    for i, profile in enumerate(profiles):
        if all(r.is_static for r in profile.values()):
            continue
        for edge in ("min_shape", "max_shape"):
            shapes = {name: _edges(rng)[edge] for name, rng in profile.items()}
            problem = failure(shapes)
            if problem is not None:
                raise ShapeError(_refusal(source, i, profile, edge, problem, failure))


def _refusal(source: str, index: int, profile: dict[str, ShapeRange], edge: str, problem: str,
             failure: Callable[[Mapping[str, tuple[int, ...]]], str | None]) -> str:
    """One sentence: which profile, which input dimension (found by moving one dimension at a time from opt)."""
    opt = {name: rng.opt for name, rng in profile.items()}
    where = f"backend_config.model_inputs[{index}]"
    if failure(opt) is not None:
        return (f"{source}: {where} cannot be served: the graph does not run even at its opt_shape "
                f"{ {k: list(v) for k, v in opt.items()} } ({problem}); give the shapes the model was exported for")
    for name, rng in profile.items():
        bound = _edges(rng)[edge]
        for d, size in enumerate(bound):
            if size == rng.opt[d]:
                continue
            trial = dict(opt)
            trial[name] = tuple(size if j == d else x for j, x in enumerate(rng.opt))
            why = failure(trial)
            if why is not None:
                return (f"{source}: {where}.input_shapes.{name}.{edge}[{d}] = {size} cannot be served: the graph "
                        f"runs at opt_shape {list(rng.opt)} but not with dimension {d} at {size} ({why}); "
                        f"set {edge}[{d}] to {rng.opt[d]} (a size the model was made for) or export the model "
                        f"for that size")
    return (f"{source}: {where} cannot be served at its {edge} "
            f"{ {k: list(_edges(r)[edge]) for k, r in profile.items()} } ({problem}); narrow the profile")
