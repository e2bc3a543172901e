"""Walking ONNX graphs, subgraphs (Loop/If/Scan bodies) included."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # annotations only: walking a graph needs no onnx import, so `import trtdeploy` stays cheap
    import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by a node's attributes (a Loop's body, an If's branches)."""
    return [g for a in node.attribute for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


SMALL_INITIALIZER = 1024  # elements: bigger initializers carry weights, which structure checks do not read


def weightless(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy of ``model`` whose large initializers are graph inputs of the same type and shape (no data), and
    without the value_info an exporter recorded: what the checker and shape inference need, without
    serialising the weights for them (half a second for a 45 MB ResNet-18)."""
    import onnx
    from onnx import helper

    graph = onnx.GraphProto(name=model.graph.name or "graph")
    for field in ("node", "input", "output"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for init in model.graph.initializer:
        if math.prod(init.dims) > SMALL_INITIALIZER or init.external_data:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)
    light = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    light.graph.CopyFrom(graph)
    return light
