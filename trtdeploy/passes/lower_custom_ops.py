"""Replace trtdeploy's custom nodes (``mmdeploy::*``) with standard ONNX ops.

Guarantee: after ``lower_custom_ops(model, 'plugin-free')`` the graph holds no node whose
op has a registered lowering; every replacement computes what the op's torch-level
function computes (see each ``ops/<op>/lowering.py``), with fixed output shapes and no
``NonZero``. Each op's lowering writes its nodes through an ``Emitter`` (``utils/onnx_build.py``)
and registers in ``LOWERINGS``, so this pass knows no op by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from ..errors import BuildError, ConfigError
from ..registry import Registry
from ..utils.onnx_build import Emitter
from ..utils.onnx_graph import all_nodes, subgraphs

ROUTES = ("auto", "plugin", "plugin-free")
MIN_OPSET = 13  # Split, Squeeze and Unsqueeze take their sizes/axes as inputs
UPGRADE_OPSET = 17  # what an older graph is converted to (the lowerings also use Shape's start/end, opset 15)


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@dataclass(frozen=True)
class Lowering:
    """How one custom op becomes standard ONNX ops; ``ops/<op>/`` registers it (``ops.register_op``)."""

    lower: Callable[[onnx.NodeProto, Emitter], None]
    has_plugin: bool = False  # the op also has a plugin or ONNX Runtime kernel: the 'plugin' route keeps its nodes
    preferred: bool = True    # 'auto' lowers it even where the backend serves the node


# 'domain::op_type' -> Lowering; filled by the op folders as they are imported (``ops.load_ops`` imports all)
LOWERINGS: Registry[Lowering] = Registry("plugin-free lowering")


def lower_custom_ops(model: onnx.ModelProto, route: str = "plugin-free",
                     serves: Callable[[str], bool] = lambda key: False) -> onnx.ModelProto:
    """Replace custom nodes that have a plugin-free lowering by standard ONNX ops, deciding per op.

    ``route`` is ``backend_config.custom_ops``: 'plugin-free' lowers every node that has a lowering;
    'plugin' keeps the nodes whose op has a plugin (or ONNX Runtime kernel) and lowers the rest;
    'auto' lowers a node where its op prefers its lowering (ours do: exact, and nothing needed at run
    time) or where the backend does not serve the node (``serves('domain::op_type')``, the backend's
    ``serves_custom_op``), and keeps it where the backend serves it. Nodes without a lowering stay.
    The model is changed in place and returned (a graph below opset 13 is first converted to 17, so
    use the returned model); domains no node uses any more are dropped.
    """
    if route not in ROUTES:
        raise ConfigError(f"backend_config.custom_ops must be one of {', '.join(ROUTES)}, got {route!r}")
    keep = {"plugin-free": lambda key, op: False, "plugin": lambda key, op: op.has_plugin,
            "auto": lambda key, op: not op.preferred and serves(key)}[route]
    present = {f"{n.domain}::{n.op_type}" for n in all_nodes(model.graph)}
    table = {key: op.lower for key, op in LOWERINGS.items() if key in present and not keep(key, op)}
    if not table:
        return model
    opset = model_opset(model)
    if opset < MIN_OPSET:  # e.g. MMDeploy's configs export with opset 11
        model, opset = upgrade_opset(model, "the plugin-free lowering of custom ops"), UPGRADE_OPSET
    _lower_graph(model.graph, table, opset, scope="")
    used = {n.domain for n in all_nodes(model.graph)} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def upgrade_opset(model: onnx.ModelProto, needed_by: str) -> onnx.ModelProto:
    """``model`` converted to opset ``UPGRADE_OPSET`` (custom nodes are kept) for ``needed_by``, which needs
    ``MIN_OPSET``: MMDeploy's configs export with opset 11."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as e:  # the converter has no adapter for some op of the graph
        raise BuildError(f"{needed_by} needs ONNX opset >= {MIN_OPSET} and the graph (opset {model_opset(model)}) "
                         f"cannot be converted ({e}); set onnx_config.opset_version=17 (an ONNX file: export it "
                         f"again with opset 17)") from None


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

