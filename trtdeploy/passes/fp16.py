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
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..utils.onnx_graph import all_nodes, subgraphs

HEAVY_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Float inputs that keep FP32 whatever the data type is (ONNX types them separately).
FP32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
FP16_SUFFIX = "__fp16"


def to_fp16_body(model: onnx.ModelProto, body_targets: Iterable[str] | None = None,
                 keep_fp32: Iterable[str] = ()) -> onnx.ModelProto:
    """FP16 for the nodes upstream of ``body_targets`` (default: every Conv/Gemm/MatMul); graph I/O stays FP32.

    ``keep_fp32`` are node names kept in FP32 as well (the walk does not pass them).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    floats = float_tensors(model)
    keep = set(keep_fp32) | {n.name for n in graph.node if has_subgraph(n)}
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

    def fp16_input(name: str) -> str:
        if name in body_outputs:
            return name + FP16_SUFFIX
        if name not in made:
            made[name] = name + FP16_SUFFIX
            if name in init:
                value = numpy_helper.to_array(init[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(value, made[name]))
            else:
                nodes.append(helper.make_node("Cast", [name], [made[name]], name=f"{name}_to_fp16", to=TensorProto.FLOAT16))
        return made[name]

    for node in graph.node:
        if node.name in body:
            fixed = FP32_ONLY_INPUTS.get(node.op_type, set())
            for k, name in enumerate(node.input):
                if name and name in floats and k not in fixed:
                    node.input[k] = fp16_input(name)
            for k, name in enumerate(node.output):
                if name in body_outputs:
                    node.output[k] = name + FP16_SUFFIX
            _retype_attributes(node)
            nodes.append(node)
            for name in node.output:
                original = name[: -len(FP16_SUFFIX)] if name.endswith(FP16_SUFFIX) else None
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


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Casts and constants inside the FP16 body produce FP16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))


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
