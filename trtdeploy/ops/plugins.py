"""What each custom op's TensorRT plugin is, independent of any TensorRT module.

Each op's ``plugin.py`` describes its plugin as a ``PluginSpec``: its fields (the ONNX
node's attributes, typed and range-checked), output types and shapes, formats, workspace
and ``enqueue``. Nothing here imports TensorRT: ``backends/tensorrt/plugins.py`` turns the
specs into IPluginV3 classes and registers them, so ``ops`` sits below ``backends``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import BuildError, UnsupportedOpError
from ..registry import Registry

REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One plugin field, which is one attribute of the ONNX node: its type and the values it may take."""

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


class PluginSpec:
    """What one op's plugin computes; ``plugin.py`` subclasses this for each op.

    Methods get the TensorRT module and the field values; they hold no TensorRT state,
    so one spec serves ``tensorrt`` and ``tensorrt_rtx`` alike.
    """

    name: str = ""
    version: str = "1"
    namespace: str = "mmdeploy"
    fields: tuple[Field, ...] = ()

    def num_outputs(self, values: Mapping) -> int:
        return 1

    def output_dtypes(self, trt, values: Mapping, input_types: list) -> list:
        return [input_types[0]] * self.num_outputs(values)

    def output_shapes(self, trt, values: Mapping, inputs: list, exprs) -> list:
        raise NotImplementedError

    def io_types(self, trt, values: Mapping, num_inputs: int) -> list:
        """The one data type each input then output accepts, in order (linear format)."""
        raise NotImplementedError

    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        """Raise BuildError when input ranks or fixed dims do not fit the op (called at configure time)."""

    def workspace_size(self, values: Mapping, input_shapes: list[tuple], output_shapes: list[tuple]) -> int:
        return 0

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        """Run the op on the current (TensorRT's) stream: tensors over TensorRT's buffers, workspace bytes or None."""
        raise NotImplementedError


PLUGINS: Registry[PluginSpec] = Registry("TensorRT plugin")


def register_spec(spec: PluginSpec) -> PluginSpec:
    PLUGINS.register(f"{spec.namespace}::{spec.name}")(spec)
    return spec


def load_plugin_specs() -> None:
    """Import every op folder's ``plugin.py`` (each registers its spec)."""
    import importlib
    import pkgutil

    from . import __path__ as ops_path

    for info in pkgutil.iter_modules(ops_path):
        if info.ispkg:
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module(f"{__package__}.{info.name}.plugin")


# -- what the TensorRT backend asks before a build and before an engine load --------------------------
STANDARD_DOMAINS = ("", "ai.onnx")


def custom_nodes(model) -> list:
    """The graph's nodes outside the standard ONNX domain (subgraphs included)."""
    from ..utils.onnx_graph import all_nodes

    return [node for node in all_nodes(model.graph) if node.domain not in STANDARD_DOMAINS]


def plugin_op_types(model) -> list[str]:
    """Op types of the graph's custom nodes (kept FP32 by the FP16 pass: the plugins take FP32)."""
    return sorted({node.op_type for node in custom_nodes(model)})


def known_plugins() -> str:
    load_plugin_specs()
    return ", ".join(f"{key} v{spec.version}" for key, spec in PLUGINS.items())


def unknown_op_hint() -> str:
    return (f"trtdeploy has TensorRT plugins only for {known_plugins()}; lower it with a rewriter into standard ONNX "
            f"ops or add an ops/<op>/plugin.py")


def check_plugin_nodes(model) -> list[str]:
    """Check every custom node against its plugin (known op, attribute types and ranges); the plugin keys used."""
    used = []
    nodes = custom_nodes(model)
    if nodes:
        load_plugin_specs()  # only then: the op folders import torch
    for node in nodes:
        key = f"{node.domain}::{node.op_type}"
        if key not in PLUGINS:
            raise UnsupportedOpError(f"node {node.name or '<unnamed>'} is the custom op {node.op_type} of domain "
                                     f"{node.domain!r}, which no TensorRT plugin serves; {unknown_op_hint()}")
        read_node_attributes(node, PLUGINS.get(key).fields)
        used.append(key)
    return sorted(set(used))
