"""Replace trtdeploy's custom nodes (``mmdeploy::*``) with standard ONNX ops.

Guarantee: after ``lower_custom_ops(model, 'plugin-free')`` the graph holds no node whose
op has a registered lowering; every replacement computes what the op's torch-level
function computes (see each ``ops/<op>/lowering.py``), with fixed output shapes and no
``NonZero``. Each op's lowering writes its nodes through an ``Emitter``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import BuildError, ConfigError
from ..utils.onnx_graph import all_nodes, subgraphs

ROUTES = ("auto", "plugin", "plugin-free")
MIN_OPSET = 13  # Split, Squeeze and Unsqueeze take their sizes/axes as inputs
UPGRADE_OPSET = 17  # what an older graph is converted to (the lowerings also use Shape's start/end, opset 15)


class Emitter:
    """Writes standard ONNX nodes for one custom node (or a Loop body) with unique names.

    ``op`` returns the output name (or names); constants become ``Constant`` nodes, so a
    Loop body made with ``sub()`` is self-contained.
    """

    def __init__(self, prefix: str, opset: int):
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self._consts: dict[tuple, str] = {}
        self._count = [0]  # shared with sub-emitters, so names stay unique across bodies

    def name(self, hint: str) -> str:
        self._count[0] += 1
        return f"{self.prefix}/{hint}_{self._count[0]}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        names = [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type + "_node"), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=np.float32) -> str:
        """A Constant node, one per distinct value in this graph (fewer nodes for onnxslim to fold)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            out = self._consts[key] = self.name("const")
            self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node",
                                               value=numpy_helper.from_array(array)))
        return self._consts[key]

    def i64(self, value) -> str:
        return self.const(value, np.int64)

    def full(self, shape: str, value, elem_type: int = TensorProto.FLOAT) -> str:
        """A tensor of ``shape`` (an int64 shape tensor) filled with ``value``."""
        return self.op("ConstantOfShape", shape, value=helper.make_tensor("value", elem_type, [1], [value]))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """Reduce* with ``axes`` as an attribute or an input, whichever the opset wants."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.i64(list(axes)), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.i64(list(axes)))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", x, self.i64(list(axes)))

    def dim(self, x: str, axis: int) -> str:
        """The size of ``x`` along ``axis`` (>= 0) as a 1-element int64 tensor."""
        return self.op("Shape", x, start=axis, end=axis + 1)

    def output(self, x: str, name: str) -> None:
        """Make ``x`` available under ``name`` (the replaced node's output)."""
        self.nodes.append(helper.make_node("Identity", [x], [name], name=self.name("output")))

    def sub(self) -> "Emitter":
        child = Emitter(self.prefix, self.opset)
        child._count = self._count
        return child

    def graph(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[str]) -> onnx.GraphProto:
        """This emitter's nodes as a Loop body graph with the given inputs and outputs (types left open)."""
        return helper.make_graph(self.nodes, self.name(name), inputs,
                                 [helper.make_value_info(o, onnx.TypeProto()) for o in outputs])


def scalar_input(name: str, elem_type: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [])


def tensor_input(name: str, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, None)


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values (strings decoded)."""
    values = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def lowerings() -> dict[str, Callable]:
    """``'domain::op_type' -> lower(node, emitter)`` for every registered op that has one."""
    from ..ops import CUSTOM_OPS, load_ops

    load_ops()
    return {key: op.lower for key, op in CUSTOM_OPS.items() if op.lower is not None}


def lower_custom_ops(model: onnx.ModelProto, route: str = "plugin-free") -> onnx.ModelProto:
    """Replace every custom node that has a plugin-free lowering by standard ONNX ops.

    ``route`` is ``backend_config.custom_ops``: 'plugin-free' and 'auto' lower every node that has a
    lowering ('auto' because it builds everywhere and needs nothing at run time); 'plugin' keeps
    the nodes that have a TensorRT plugin (and ONNX Runtime implementation) and lowers the rest.
    The model is changed in place and returned (a graph below opset 13 is first converted to 17, so
    use the returned model); domains no node uses any more are dropped.
    """
    if route not in ROUTES:
        raise ConfigError(f"backend_config.custom_ops must be one of {', '.join(ROUTES)}, got {route!r}")
    table = lowerings()
    if route == "plugin":
        from ..ops.plugins import PLUGINS, load_plugin_specs

        load_plugin_specs()
        table = {key: lower for key, lower in table.items() if key not in PLUGINS}
    if not any(f"{n.domain}::{n.op_type}" in table for n in all_nodes(model.graph)):
        return model
    opset = model_opset(model)
    if opset < MIN_OPSET:  # e.g. MMDeploy's configs export with opset 11
        model, opset = _upgrade_opset(model, opset), UPGRADE_OPSET
    _lower_graph(model.graph, table, opset, scope="")
    used = {n.domain for n in all_nodes(model.graph)} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as e:  # the converter has no adapter for some op of the graph
        raise BuildError(f"the plugin-free lowering of custom ops needs ONNX opset >= {MIN_OPSET} and the graph "
                         f"(opset {opset}) cannot be converted ({e}); set onnx_config.opset_version=17") from None


def _lower_graph(graph: onnx.GraphProto, table: dict[str, Callable], opset: int, scope: str) -> None:
    """Lower the custom nodes of ``graph`` and of every subgraph (If/Loop/Scan bodies) in place."""
    new_nodes = []
    for index, node in enumerate(graph.node):
        for sub in subgraphs(node):
            _lower_graph(sub, table, opset, scope=f"{scope}{sub.name}/")
        lower = table.get(f"{node.domain}::{node.op_type}")
        if lower is None:
            new_nodes.append(node)
            continue
        emitter = Emitter(f"{scope}{node.name or node.op_type + '_' + str(index)}", opset)
        lower(node, emitter)
        new_nodes.extend(emitter.nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)

