"""A small helper to write ONNX nodes from Python: the node builder the plugin-free lowerings use.

It sits under ``utils`` so that ``ops/<op>/lowering.py`` and ``passes`` can both use it
without importing each other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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
        return self.dims(x, axis, axis + 1)

    def dims(self, x: str, start: int, end: int) -> str:
        """``Shape(x)[start:end]`` (``start``, ``end`` >= 0); Shape's start/end attributes exist from opset 15."""
        if self.opset >= 15:
            return self.op("Shape", x, start=start, end=end)
        return self.op("Slice", self.op("Shape", x), self.i64([start]), self.i64([end]))

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
