"""What each custom op's TensorRT plugin is, independent of any TensorRT module.

Each op's ``plugin.py`` describes its plugin as a ``PluginSpec`` subclass: output types and
shapes, formats, workspace and ``enqueue``; its name, namespace, version and fields are the op's
description (``CustomOp``). Nothing here imports TensorRT: ``backends/tensorrt/plugins.py`` turns
the specs into IPluginV3 classes and registers them, so ``ops`` sits below ``backends``.
"""
from __future__ import annotations

from typing import Mapping

from ..errors import UnsupportedOpError


class PluginSpec:
    """What one op's plugin computes; ``plugin.py`` subclasses this for each op.

    Methods get the TensorRT module and the field values; they hold no TensorRT state,
    so one spec serves ``tensorrt`` and ``tensorrt_rtx`` alike.
    """

    def __init__(self, op):
        self.op = op  # the CustomOp this plugin builds: the plugin's name, namespace, version and fields
        self.name, self.namespace, self.version, self.fields = op.op_type, op.domain, op.version, op.fields

    def num_outputs(self, values: Mapping) -> int:
        return 1

    def output_dtypes(self, trt, values: Mapping, input_types: list) -> list:
        return [input_types[0]] * self.num_outputs(values)

    def output_shapes(self, trt, values: Mapping, inputs: list, exprs) -> list:
        raise NotImplementedError

    def io_types(self, trt, values: Mapping, num_inputs: int) -> list:
        """The one data type each input then output accepts, in order (linear format)."""
        raise NotImplementedError

    def check_values(self, values: Mapping, where: str) -> None:
        """Raise BuildError for field values the node may hold but this plugin does not implement (before parsing)."""

    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        """Raise BuildError when input ranks or fixed dims do not fit the op (called at configure time)."""

    def workspace_size(self, values: Mapping, input_shapes: list[tuple], output_shapes: list[tuple]) -> int:
        return 0

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        """Run the op on the current (TensorRT's) stream: tensors over TensorRT's buffers, workspace bytes or None."""
        raise NotImplementedError


def plugin_specs() -> dict[str, PluginSpec]:
    """Every described op's TensorRT plugin, by 'domain::op_type'."""
    from . import CUSTOM_OPS, load_ops

    load_ops()
    return {key: op.plugin_spec for key, op in CUSTOM_OPS.items() if op.plugin is not None}


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
    return ", ".join(f"{key} v{spec.version}" for key, spec in plugin_specs().items())


def unknown_op_hint() -> str:
    return (f"trtdeploy has TensorRT plugins only for {known_plugins()}; lower it with a rewriter into standard ONNX "
            f"ops or add an ops/<op>/plugin.py")


def check_plugin_nodes(model) -> list[str]:
    """Check every custom node against its plugin (known op, attribute types and ranges); the plugin keys used."""
    used = []
    nodes = custom_nodes(model)
    specs = plugin_specs() if nodes else {}
    for node in nodes:
        key = f"{node.domain}::{node.op_type}"
        if key not in specs:
            raise UnsupportedOpError(f"node {node.name or '<unnamed>'} is the custom op {node.op_type} of domain "
                                     f"{node.domain!r}, which no TensorRT plugin serves; {unknown_op_hint()}")
        specs[key].check_values(specs[key].op.read(node), specs[key].op.where(node))
        used.append(key)
    return sorted(set(used))
