"""FP16 for strongly typed TensorRT: the network body in FP16, post-processing in FP32.

Strongly typed TensorRT (TensorRT-RTX, TensorRT >= 11) takes precision from the graph's tensor
types, so "fp16_mode" means rewriting the graph. Converting everything breaks detectors: box
decoding, score thresholds and NMS lose accuracy in FP16, and generic converters mishandle values
that Loop/If bodies read from the outer graph (TensorRT then meets Float x Half nodes). So only
the "body" becomes FP16: the nodes that feed a compute-heavy layer (Conv, ConvTranspose, Gemm,
MatMul — or the given ``body_targets``, e.g. the INT8 layers) through float tensors, without
passing a node with a subgraph. Everything else keeps its FP32 tensors under their own names:
each FP16 value that leaves the body is cast back to FP32 under its original name, so FP32 nodes
(Loop bodies included) and the graph outputs read exactly what they read before.

Inside the body, what 16 bits cannot hold stays FP32 (``fragile_nodes``): constants outside the
format's range and the nodes that read them, normalisation chains, softmax, exp/log and large
reductions. BF16 (``precision='bf16'``) is the same walk with another type; ``emulate`` writes the
FP32 graph with 16-bit round trips at the same points, which ONNX Runtime's CPU kernels can run.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..utils.onnx_graph import all_nodes, subgraphs

HEAVY_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Float inputs that keep FP32 whatever the data type is (ONNX types them separately).
FP32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


@dataclass(frozen=True)
class LowFloat:
    """A 16-bit float format the body can be lowered to, with the range the guards check constants against."""

    name: str
    onnx_type: int
    numpy_type: type
    max: float        # the largest finite value
    smallest: float   # the smallest positive (subnormal) value: nonzero values below half of it become 0
    suffix: str       # body tensors are renamed NAME + suffix; the FP32 name keeps the FP32 value

    def round(self, values: np.ndarray) -> np.ndarray:
        """``values`` rounded to this format, as float32 (what an emulating graph stores)."""
        return np.asarray(values, np.float32).astype(self.numpy_type).astype(np.float32)


LOW_FLOATS = {
    "fp16": LowFloat("fp16", TensorProto.FLOAT16, np.float16, 65504.0, 2.0 ** -24, "__fp16"),
    "bf16": LowFloat("bf16", TensorProto.BFLOAT16, ml_dtypes.bfloat16, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),
                     2.0 ** -133, "__bf16"),
}
FP16_SUFFIX = LOW_FLOATS["fp16"].suffix
LOW_SUFFIXES = tuple(low.suffix for low in LOW_FLOATS.values())

# -- guards: what stays FP32 because 16 bits cannot hold it ------------------------------------------
# Ops whose result is wrong in 16 bits on ordinary data: sums of exponentials or squares overflow
# FP16's 65504 and lose BF16's 8-bit mantissa; exp/log/pow/sqrt leave the range or amplify its error.
ALWAYS_FP32 = {
    **dict.fromkeys(("Softmax", "LogSoftmax"), "a softmax sums exponentials"),
    **dict.fromkeys(("Exp", "Log", "Pow", "Sqrt", "Reciprocal"), "its result leaves the 16-bit range easily"),
    **dict.fromkeys(("LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization",
                     "RMSNormalization", "SimplifiedLayerNormalization"),
                    "a normalisation sums squares"),
    **dict.fromkeys(("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                     "ReduceProd"), "a large reduction overflows or loses precision"),
}
NORM_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2")
# Between a reduction of squares and the division it feeds (LayerNorm/RMSNorm/F.normalize decomposed).
NORM_CHAIN = ("Add", "Sqrt", "Clip", "Max", "Expand", "Reciprocal", "Pow", "Cast", "Unsqueeze", "Reshape", "Identity")
SMALL_CONSTANT = 16  # eps-like constants: a tiny value in a large weight tensor is harmless, in an eps it is not


def fragile_nodes(model: onnx.ModelProto, precision: str = "fp16") -> dict[str, str]:
    """Top-level nodes that must stay FP32 in a ``precision`` body, each with the reason.

    Constants out of the format's range and the nodes reading them (an ``eps=1e-12`` is 0 in
    FP16, so ``x / max(norm, eps)`` becomes 0/0), normalisation chains (square, reduction,
    sqrt, the division), softmax, exp/log and large reductions.
    """
    low = LOW_FLOATS[precision]
    graph = model.graph
    reasons: dict[str, str] = {}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    for n in graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None and value.data_type == TensorProto.FLOAT:
                constants[n.output[0]] = numpy_helper.to_array(value)
    for name, values in constants.items():
        problem = _out_of_range(values, low)
        for reader in consumers.get(name, []) if problem else ():
            # and what the reader feeds up to the division or product that uses it (Clip(eps) -> Expand -> Div)
            for node in (reader, *_chain_to_division(reader, consumers)):
                reasons.setdefault(node.name, f"it computes with {name!r}, which {problem}")
    for n in graph.node:
        if n.op_type in ALWAYS_FP32:
            reasons.setdefault(n.name, ALWAYS_FP32[n.op_type])
        if n.op_type in NORM_REDUCTIONS and n.input:
            square = producer.get(n.input[0])
            squared = square is not None and _is_square(square, constants)
            if not (squared or n.op_type in ("ReduceSumSquare", "ReduceL2")):
                continue
            why = f"it is part of the normalisation at {n.name!r} (a reduction of squares)"
            if squared:
                reasons.setdefault(square.name, why)
            reasons.setdefault(n.name, why)
            for chained in _chain_to_division(n, consumers):
                reasons.setdefault(chained.name, why)
    return reasons


def _out_of_range(values: np.ndarray, low: LowFloat) -> str | None:
    finite = values[np.isfinite(values)]
    big = finite[np.abs(finite) > low.max]
    if big.size:
        return f"holds {float(big[0]):g}, beyond {low.name}'s largest value {low.max:g}"
    if values.size <= SMALL_CONSTANT:
        tiny = finite[(finite != 0) & (np.abs(finite) < low.smallest / 2)]
        if tiny.size:
            return f"holds {float(tiny[0]):g}, which is 0 in {low.name}"
    return None


def _is_square(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
        return True
    if node.op_type == "Pow" and len(node.input) == 2 and node.input[1] in constants:
        return bool(np.all(constants[node.input[1]] == 2))
    return False


def _chain_to_division(start: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]],
                       depth: int = 8) -> Iterator[onnx.NodeProto]:
    """The nodes from a reduction of squares down to (and including) the Div/Mul that applies it."""
    frontier = [start]
    for _ in range(depth):
        following = [c for n in frontier for o in n.output for c in consumers.get(o, [])]
        frontier = []
        for c in following:
            if c.op_type in ("Div", "Mul"):
                yield c
            elif c.op_type in NORM_CHAIN:
                yield c
                frontier.append(c)
        if not frontier:
            return


def matching_nodes(model: onnx.ModelProto, patterns: Iterable[str]) -> list[str]:
    """Top-level node names matching any fnmatch pattern (how configs name nodes)."""
    patterns = list(patterns)
    return [n.name for n in model.graph.node if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]


def to_fp16_body(model: onnx.ModelProto, body_targets: Iterable[str] | None = None,
                 keep_fp32: Iterable[str] = (), precision: str = "fp16", guard: bool = True,
                 emulate: bool = False) -> onnx.ModelProto:
    """``precision`` (fp16 or bf16) for the nodes upstream of ``body_targets`` (default: every
    Conv/Gemm/MatMul); graph I/O stays FP32.

    ``keep_fp32`` are node names kept in FP32 as well (the walk does not pass them); with ``guard``
    so are ``fragile_nodes``. ``emulate`` writes the same graph in FP32 with a round trip through
    ``precision`` (Cast there and back) at every point the real one converts or computes in 16 bits,
    for checking numerics where ONNX Runtime lacks the 16-bit kernels (BF16 on the CPU).
    """
    low = LOW_FLOATS[precision]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    floats = float_tensors(model)
    keep = set(keep_fp32) | {n.name for n in graph.node if has_subgraph(n)}
    if guard:
        keep |= set(fragile_nodes(model, precision))
    targets = set(body_targets) if body_targets is not None else {n.name for n in graph.node if n.op_type in HEAVY_OPS}
    # Follow float edges only: a Reshape's shape input or a Shape node does not make its producer FP16.
    body = upstream_of(graph, targets - keep, stop=keep, through=floats)
    # A node whose outputs have unknown types stays FP32: we could not tell what its consumers expect.
    known = floats | _typed_non_float(model)
    body = {n.name for n in graph.node if n.name in body and all(o in known for o in n.output if o)}

    init = {i.name: i for i in graph.initializer}
    body_outputs = {o for n in graph.node if n.name in body for o in n.output if o in floats}
    consumed_outside = _read_outside(graph, body) | {o.name for o in graph.output}
    made: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []

    def lowered(source: str, name: str, what: str) -> None:
        """``name`` = ``source`` in 16 bits (emulating: rounded to 16 bits and back, still FP32)."""
        if emulate:
            nodes.append(helper.make_node("Cast", [source], [name + "_rounded"], name=f"{what}_round", to=low.onnx_type))
            nodes.append(helper.make_node("Cast", [name + "_rounded"], [name], name=f"{what}_back", to=TensorProto.FLOAT))
        else:
            nodes.append(helper.make_node("Cast", [source], [name], name=what, to=low.onnx_type))

    def low_input(name: str) -> str:
        if name in body_outputs:
            return name + low.suffix
        if name not in made:
            made[name] = name + low.suffix
            if name in init:
                value = numpy_helper.to_array(init[name])
                value = low.round(value) if emulate else value.astype(low.numpy_type)
                graph.initializer.append(numpy_helper.from_array(value, made[name]))
            else:
                lowered(name, made[name], f"{name}_to_{low.name}")
        return made[name]

    for node in graph.node:
        if node.name in body:
            fixed = FP32_ONLY_INPUTS.get(node.op_type, set())
            for k, name in enumerate(node.input):
                if name and name in floats and k not in fixed:
                    node.input[k] = low_input(name)
            for k, name in enumerate(node.output):
                if name in body_outputs:
                    node.output[k] = name + low.suffix + ("_computed" if emulate else "")
            _retype_attributes(node, low, emulate)
            nodes.append(node)
            for name in node.output:
                if emulate and name.endswith("_computed"):
                    name = name[: -len("_computed")]
                    lowered(name + "_computed", name, f"{name}_output")  # per output: a Split has several
                original = name[: -len(low.suffix)] if name.endswith(low.suffix) else None
                if original in consumed_outside:
                    nodes.append(helper.make_node("Cast", [name], [original], name=f"{original}_to_fp32",
                                                  to=TensorProto.FLOAT))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale FP32 types; TensorRT and ONNX Runtime infer them again
    used = {i for n in all_nodes(graph) for i in n.input}
    kept_init = [i for i in graph.initializer if i.name in used or i.name in {g.name for g in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    return out


def _retype_attributes(node: onnx.NodeProto, low: LowFloat, emulate: bool) -> None:
    """Casts and constants inside the body produce 16 bits (emulating: FP32 holding 16-bit values)."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT and not emulate:
            attr.i = low.onnx_type
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            value = numpy_helper.to_array(attr.t)
            attr.t.CopyFrom(numpy_helper.from_array(low.round(value) if emulate else value.astype(low.numpy_type),
                                                    attr.t.name))


def _read_outside(graph: onnx.GraphProto, body: set[str]) -> set[str]:
    """Tensors read by nodes outside ``body``, including reads from inside their subgraphs."""
    read = set()
    for node in graph.node:
        if node.name not in body:
            read |= set(node.input)
            for sub in subgraphs(node):
                read |= {i for inner in all_nodes(sub) for i in inner.input}
    return read


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def names_within(node: onnx.NodeProto) -> Iterator[str]:
    """A node's name and those of the nodes in its subgraphs (a Loop kept in FP32 keeps its body too)."""
    yield node.name
    for sub in subgraphs(node):
        for inner in sub.node:
            yield from names_within(inner)


def upstream_of(graph: onnx.GraphProto, targets: set[str], stop: set[str] = frozenset(),
                through: set[str] | None = None) -> set[str]:
    """Names of ``targets`` and of every node whose output reaches one of them.

    The walk does not pass ``stop`` nodes and, when ``through`` is given, follows only those tensors.
    """
    producer = {o: n for n in graph.node for o in n.output}
    seen: set[str] = set()
    stack = [n for n in graph.node if n.name in targets]
    while stack:
        node = stack.pop()
        if node.name in seen or node.name in stop:
            continue
        seen.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer and (through is None or i in through))
    return seen


def _inferred(model: onnx.ModelProto) -> onnx.GraphProto:
    try:
        return onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return model.graph


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the top-level FP32 tensors (shape inference supplies intermediate types)."""
    g = _inferred(model)
    values = list(g.input) + list(g.value_info) + list(g.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
    return names


def _typed_non_float(model: onnx.ModelProto) -> set[str]:
    g = _inferred(model)
    values = list(g.input) + list(g.value_info) + list(g.output)
    return {v.name for v in values if v.type.tensor_type.elem_type not in (TensorProto.FLOAT, 0)} | {
        i.name for i in g.initializer if i.data_type != TensorProto.FLOAT}
