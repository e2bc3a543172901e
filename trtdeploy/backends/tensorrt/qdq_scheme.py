"""TensorRT's Q/DQ scheme: where explicit quantization puts Q/DQ so that TensorRT's fusions run the layers in
INT8 (symmetric int8 activations, float biases)."""
from __future__ import annotations

from typing import Iterable

import onnx

from ...passes import quantize


def residual_inputs(view: quantize.GraphView, node: onnx.NodeProto) -> list[str]:
    """The inputs of a residual Add to quantize: all but the Conv output on the longer branch, which TensorRT fuses
    into that Conv (as ModelOpt does); none when no input comes from a Conv."""
    inputs = view.activations(node)
    convs = [i for i in inputs if view.op_of(i) == "Conv"]
    if len(inputs) != 2 or not convs:
        return []
    if len(convs) == 2:  # e.g. a downsampling block: the main branch is the one farther from the shared input
        a, b = (view.branch_length(i) for i in convs)
        common = set(a) & set(b)
        if common:
            split = min(common, key=lambda t: a[t] + b[t])
            convs = [convs[0] if a[split] >= b[split] else convs[1]]
    return [i for i in inputs if i != convs[0]]


def tensorrt_placement(model: onnx.ModelProto, targets: list[quantize.QuantTarget], exclude_nodes: Iterable[str] = (),
                       exclude_op_types: Iterable[str] = ()) -> quantize.Placement:
    """TensorRT's Q/DQ placement rules: INT8 inputs for weighted layers, attention MatMul, pooling, the residual
    input of Conv + Add, and Concat inputs (one shared scale, so the Concat needs no requantization)."""
    exclude_nodes, exclude_op_types = list(exclude_nodes), list(exclude_op_types)
    view = quantize.GraphView(model)
    placement = quantize.weight_placement(targets)
    for node in model.graph.node:
        if quantize.excluded(node, exclude_nodes, exclude_op_types):
            continue
        acts = view.activations(node)
        if node.op_type == "MatMul" and len(acts) == 2:
            quantized = acts
        elif node.op_type in quantize.POOLING_OPS:
            quantized = acts[:1]
        elif node.op_type == "Add":
            quantized = residual_inputs(view, node)
        else:
            continue
        for tensor in quantized:
            placement.add(tensor, node.name)
    for node in reversed(model.graph.node):  # consumers first, so chained Concats share one scale too
        if node.op_type == "Concat" and node.output[0] in placement.edges and not quantize.excluded(node, exclude_nodes,
                                                                                               exclude_op_types):
            acts = view.activations(node)
            for tensor in acts:
                placement.add(tensor, node.name)
            placement.groups.append({node.output[0], *acts})
    return placement


SCHEME = "tensorrt"
quantize.SCHEMES.register(SCHEME)(quantize.Scheme(place=tensorrt_placement))
