"""Custom ops: each ``ops/<op>/`` package describes its ONNX node once, as a ``CustomOp``.

The description is the node's typed, range-checked fields (``fields.py``) and where the op's parts
are: the torch-level function whose symbolic writes the node (``CustomOp.emit``), the plugin-free
lowering, the ONNX Runtime kernel and the TensorRT plugin. Every part gets the node's values through
the same fields (``CustomOp.read``), so all of them accept and refuse alike. ``load_ops`` is the one
loader: it imports the descriptions only; a part's module (the function and the ONNX Runtime kernel
import torch) is imported when the part is first used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from ..passes.lower_custom_ops import LOWERINGS, Lowering
from ..registry import Registry
from .fields import REQUIRED, SYMBOLIC_SUFFIX, Field, complete_fields, read_node_attributes


def _resolve(part: Any) -> Any:
    """A part given as ``"package.module:name"`` is imported now; anything else is the part itself."""
    if not isinstance(part, str):
        return part
    module, _, name = part.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class CustomOp:
    """One custom ONNX node, described once.

    ``lowering``: ``lower(values, node, emitter)`` writing standard ONNX ops through ``utils.onnx_build.Emitter``;
    ``plugin``: a ``plugins.PluginSpec`` subclass (the TensorRT plugin); ``ort``: an ``ort_ops.OrtKernel``
    (the ONNX Runtime implementation). Each is the object itself or ``"module:name"``, imported on first use.
    ``prefer_lowering``: the 'auto' route lowers the node even where the backend has the plugin (the lowering is
    exact and needs nothing at run time); False keeps the node wherever the backend serves it.
    """

    domain: str
    op_type: str
    fields: tuple[Field, ...] = ()
    lowering: Any = None
    plugin: Any = None
    ort: Any = None
    version: str = "1"
    prefer_lowering: bool = True

    @property
    def key(self) -> str:
        return f"{self.domain}::{self.op_type}"

    def where(self, node) -> str:
        return f"node {node.name or '<unnamed>'} ({node.domain}::{node.op_type})"

    def read(self, node) -> dict:
        """The node's attributes as field values: types checked, defaults filled, ranges checked."""
        return read_node_attributes(node, self.fields)

    def emit(self, g, *inputs, outputs: int = 1, **values):
        """For a symbolic: the node with ``values`` as its attributes, range-checked like every reader checks them."""
        complete_fields(values, [f for f in self.fields if f.name in values or f.default is REQUIRED],
                        f"exporting {self.key}")
        kinds = {f.name: f.kind for f in self.fields}
        attrs = {f"{name}_{SYMBOLIC_SUFFIX[kinds[name]]}": value for name, value in values.items()}
        return g.op(self.key, *inputs, outputs=outputs, **attrs)

    def lower(self, node, emitter) -> None:
        """Apply the plugin-free lowering to ``node`` (what ``passes.lower_custom_ops`` calls)."""
        _resolve(self.lowering)(self.read(node), node, emitter)

    @cached_property
    def plugin_spec(self):
        """The TensorRT plugin (a ``PluginSpec`` bound to this description), or None."""
        return _resolve(self.plugin)(self) if self.plugin is not None else None

    @cached_property
    def ort_kernel(self):
        """The ONNX Runtime implementation (``OrtKernel``), or None."""
        return _resolve(self.ort)


CUSTOM_OPS: Registry[CustomOp] = Registry("custom op")


def register_op(op: CustomOp) -> CustomOp:
    """Register ``op``, and its lowering with the pass that applies it (``passes.lower_custom_ops``)."""
    CUSTOM_OPS.register(op.key)(op)
    if op.lowering is not None:
        LOWERINGS.register(op.key)(Lowering(op.lower, has_plugin=op.plugin is not None or op.ort is not None,
                                            preferred=op.prefer_lowering))
    return op


def load_ops() -> None:
    """Import every ``ops/<op>/`` package so that each registers its description (once; no torch)."""
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


def op_for(domain: str, op_type: str) -> CustomOp | None:
    """The description of ``domain::op_type``, or None."""
    load_ops()
    key = f"{domain}::{op_type}"
    return CUSTOM_OPS.get(key) if key in CUSTOM_OPS else None


def plugin_for(domain: str, op_type: str):
    """The TensorRT plugin spec that builds ``domain::op_type``, or None."""
    op = op_for(domain, op_type)
    return op.plugin_spec if op is not None else None


def lazy_function(module: str, names: tuple[str, ...]) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving an op package's torch-level functions on first use (they import torch)."""
    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {module.rsplit('.', 1)[0]!r} has no attribute {name!r}")
    return __getattr__


__all__ = ["CustomOp", "CUSTOM_OPS", "Field", "register_op", "load_ops", "op_for", "plugin_for", "lazy_function"]
