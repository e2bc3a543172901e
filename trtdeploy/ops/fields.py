"""A custom op's fields: the ONNX node's attributes, typed and range-checked.

One ``Field`` list per op (``CustomOp.fields``) is what the symbolic writes, what the lowering,
the ONNX Runtime kernel and the TensorRT plugin read, and what every one of them checks alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import BuildError

REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One attribute of the custom node: its type and the values it may take."""

    name: str
    kind: str                                  # "int", "float", "floats" or "string"
    default: Any = REQUIRED
    valid: Callable[[Any], bool] = lambda value: True
    expected: str = ""                         # what ``valid`` accepts, in words

    def check(self, value: Any, where: str) -> Any:
        if not self.valid(value):
            raise BuildError(f"{where}: attribute {self.name!r} is {value!r} but must be {self.expected}; "
                             f"fix the attribute where the graph is exported")
        return value


# ONNX attribute type -> the field kinds it can carry (an INT may fill a float field).
_ONNX_KINDS = {"INT": ("int", "float"), "FLOAT": ("float",), "FLOATS": ("floats",), "INTS": ("floats",),
               "STRING": ("string",)}


# field kind -> Python value from an ONNX attribute's value
_FROM_ONNX = {"int": int, "float": float, "floats": lambda value: [float(v) for v in value],
              "string": lambda value: value.decode() if isinstance(value, bytes) else str(value)}
# attributes TensorRT's ONNX parser reads itself (not plugin fields)
_PARSER_ATTRIBUTES = ("plugin_namespace", "plugin_version")


def read_node_attributes(node, fields: Sequence[Field]) -> dict:
    """The node's attributes as plugin field values: types checked, defaults filled, ranges checked."""
    from onnx import AttributeProto, helper

    where = f"node {node.name or '<unnamed>'} ({node.domain}::{node.op_type})"
    known = {f.name: f for f in fields}
    values = {}
    for attr in node.attribute:
        field = known.get(attr.name)
        if attr.name in _PARSER_ATTRIBUTES:
            continue
        if field is None:
            raise BuildError(f"{where}: unknown attribute {attr.name!r}; {node.op_type} takes {sorted(known)}")
        onnx_type = AttributeProto.AttributeType.Name(attr.type)
        if field.kind not in _ONNX_KINDS.get(onnx_type, ()):
            raise BuildError(f"{where}: attribute {attr.name!r} must be of ONNX type "
                             f"{ONNX_TYPE_OF[field.kind]}, got {onnx_type}; export it with the right type")
        values[attr.name] = _FROM_ONNX[field.kind](helper.get_attribute_value(attr))
    return complete_fields(values, fields, where)


ONNX_TYPE_OF = {"int": "INT", "float": "FLOAT", "floats": "FLOATS", "string": "STRING"}
# field kind -> the suffix torch.onnx's ``g.op`` takes for an attribute of that type
SYMBOLIC_SUFFIX = {"int": "i", "float": "f", "floats": "f", "string": "s"}


def complete_fields(values: dict, fields: Sequence[Field], where: str) -> dict:
    """``values`` with defaults filled in and every value range-checked (a missing required field raises)."""
    out = {}
    for field in fields:
        if field.name not in values:
            if field.default is REQUIRED:
                raise BuildError(f"{where}: required attribute {field.name!r} is missing; add it to the node")
            out[field.name] = field.default
        else:
            out[field.name] = field.check(values[field.name], where)
    return out
