"""Custom ops: each ``ops/<op>/`` folder registers its ONNX node (domain, op type) on import.

An op brings its symbolic, its plugin-free lowering, its ONNX Runtime implementation
and its TensorRT plugin side by side. ``plugin_for`` answers whether TensorRT can
build a custom node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ..passes.lower_custom_ops import LOWERINGS, Lowering
from ..registry import Registry


@dataclass
class CustomOp:
    domain: str
    op_type: str
    plugin_name: str | None = None        # TensorRT plugin that builds the node, if any
    plugin_version: str = "1"
    register_plugin: Optional[Callable] = None  # called with a compat.TensorRT to register the creator
    ort_impl: Optional[Callable] = None          # registers the ONNX Runtime implementation
    attributes: dict = field(default_factory=dict)
    lower: Optional[Callable] = None             # plugin-free lowering: lower(node, utils.onnx_build.Emitter)


CUSTOM_OPS: Registry[CustomOp] = Registry("custom op")


def register_op(op: CustomOp) -> CustomOp:
    """Register ``op``, and its lowering with the pass that applies it (``passes.lower_custom_ops``)."""
    key = f"{op.domain}::{op.op_type}"
    CUSTOM_OPS.register(key)(op)
    if op.lower is not None:
        LOWERINGS.register(key)(Lowering(op.lower, has_plugin=op.plugin_name is not None))
    return op


def load_ops() -> None:
    """Import every ``ops/<op>/`` package so that each registers itself (once)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


def plugin_for(domain: str, op_type: str):
    """The TensorRT plugin spec (``ops/<op>/plugin.py``) that builds ``domain::op_type``, or None."""
    from .plugins import PLUGINS, load_plugin_specs

    load_plugin_specs()
    return PLUGINS._items.get(f"{domain}::{op_type}")
