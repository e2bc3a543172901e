"""ONNX Runtime implementations of the custom nodes, as onnxruntime-extensions Python ops.

Each op's ``ort.py`` holds an ``OrtKernel`` (its description, ``CustomOp.ort``, names it): the
node's input count and output types and a ``compute`` function on numpy arrays; the fields are the
op's own, so the kernel checks attributes as the TensorRT plugin and the lowering do. ``session_for`` serves graphs that hold such nodes (MMDeploy's own
exports, or ours in the plugin route): it registers the kernels with onnxruntime-extensions
and adapts what its Python-op bridge cannot express, in memory only:

- FLOATS attributes (``featmap_strides``) become comma-separated STRING attributes;
- variadic inputs (one feature map per level) are padded with an empty tensor to the
  kernel's fixed input count, and optional outputs (``return_index``) get a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ModelError
from .plugins import custom_nodes

INSTALL_HINT = "pip install onnxruntime-extensions"
ABSENT = "trtdeploy_absent_input"  # the empty tensor that pads variadic inputs


@dataclass(frozen=True)
class OrtKernel:
    """One custom node for ONNX Runtime; ``compute(values, *arrays)`` returns the outputs as numpy arrays."""

    num_inputs: int              # inputs beyond the node's own are padded with ``ABSENT``
    output_types: tuple[str, ...]  # numpy dtype names, in output order
    compute: Callable
    check: Callable[[dict, str], None] | None = None  # refuses field values the node may hold but this kernel lacks


def ort_ops() -> dict:
    """The described ops that have an ONNX Runtime implementation, by 'domain::op_type' (their kernels not imported)."""
    from . import CUSTOM_OPS, load_ops

    load_ops()
    return {key: op for key, op in CUSTOM_OPS.items() if op.ort is not None}


def _as_string(value) -> str:
    return ",".join(repr(float(v)) for v in value)


def _field_values(op, attrs: dict) -> dict:
    """The keyword arguments onnxruntime-extensions hands over, back in the fields' own types."""
    values = {}
    for field in op.fields:
        if field.name not in attrs:
            values[field.name] = field.default
        elif field.kind == "floats":
            values[field.name] = [float(v) for v in str(attrs[field.name]).split(",") if v]
        else:
            values[field.name] = attrs[field.name]
    return values


_registered: set[str] = set()


def _register_with_extensions(op) -> None:
    key, kernel = op.key, op.ort_kernel
    if key in _registered:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    kinds = {"int": PyCustomOpDef.dt_int64, "float": PyCustomOpDef.dt_float, "floats": PyCustomOpDef.dt_string,
             "string": PyCustomOpDef.dt_string}
    dtypes = {"float32": PyCustomOpDef.dt_float, "int64": PyCustomOpDef.dt_int64}

    def run(*arrays, **attrs):
        outputs = kernel.compute(_field_values(op, attrs), *arrays)
        return tuple(np.ascontiguousarray(o, dtype=t) for o, t in zip(outputs, kernel.output_types))

    onnx_op(op_type=key, inputs=[PyCustomOpDef.dt_float] * kernel.num_inputs,
            outputs=[dtypes[t] for t in kernel.output_types],
            attrs={f.name: kinds[f.kind] for f in op.fields})(run)
    _registered.add(key)


def adapt_for_extensions(model) -> list[str]:
    """Rewrite the custom nodes in ``model`` (in place) into the form the Python-op bridge serves; their keys."""
    import onnx
    from onnx import helper

    ops = ort_ops()
    used = []
    absent_needed = False
    for node in custom_nodes(model):
        key = f"{node.domain}::{node.op_type}"
        if key not in ops:
            raise ModelError(f"node {node.name or '<unnamed>'} is the custom op {node.op_type} of domain "
                             f"{node.domain!r}, which trtdeploy cannot run on ONNX Runtime; it has ONNX Runtime "
                             f"implementations for {', '.join(ops)}")
        op, kernel = ops[key], ops[key].ort_kernel
        values = op.read(node)  # types and ranges, as the TensorRT plugin and the lowering check them
        if kernel.check is not None:
            kernel.check(values, op.where(node))
        del node.attribute[:]
        for field in op.fields:
            value = values[field.name]
            node.attribute.append(helper.make_attribute(field.name, _as_string(value) if field.kind == "floats"
                                                        else value))
        if len(node.input) > kernel.num_inputs:
            raise ModelError(f"node {node.name or '<unnamed>'} ({key}) has {len(node.input)} inputs; at most "
                             f"{kernel.num_inputs} are supported")
        absent_needed |= len(node.input) < kernel.num_inputs
        node.input.extend([ABSENT] * (kernel.num_inputs - len(node.input)))
        node.output.extend([f"{node.name or key}/unused_{i}" for i in range(len(node.output),
                                                                           len(kernel.output_types))])
        used.append(key)
    if absent_needed and ABSENT not in {i.name for i in model.graph.initializer}:
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((0,), np.float32), ABSENT))
    return sorted(set(used))


def session_for(path: Path, options, providers: list[str]):
    """An InferenceSession for a graph with custom nodes, with their implementations registered."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        ops = ", ".join(sorted({f"{n.domain}::{n.op_type}" for n in custom_nodes(model)}))
        raise ModelError(f"{path} holds custom ops ({ops}) that ONNX Runtime runs through onnxruntime-extensions, "
                         f"which is not installed: {INSTALL_HINT}") from None
    ops = ort_ops()
    for key in adapt_for_extensions(model):
        _register_with_extensions(ops[key])
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=providers)
