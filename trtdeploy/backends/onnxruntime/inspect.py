"""``trtdeploy inspect`` of an ONNX file: inputs, outputs, opsets, an op histogram, custom ops and which
backends can build the graph."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, ModelError
from ...utils.onnx_graph import all_nodes
from ..base import all_backends
from ...utils.table import format_table
from ..sidecar import read_sidecar, sidecar_path


def _onnx_dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _onnx_tensor(value_info) -> dict:
    from onnx import helper

    elem = value_info.type.tensor_type.elem_type
    dtype = str(helper.tensor_dtype_to_np_dtype(elem)) if elem else "unknown"
    return {"name": value_info.name, "dtype": dtype, "shape": _onnx_dims(value_info)}


def _backend_support(model) -> dict:
    """For every backend: can it build this graph here, and which nodes stop it."""
    support = {}
    for backend in all_backends():
        name = backend.name
        try:
            backend.require()
            bad = backend.unsupported_nodes(model)
        except BackendUnavailableError as e:
            support[name] = {"installed": False, "note": str(e)}
            continue
        support[name] = {"installed": True, "supported": not bad, "unsupported_nodes": bad}
    return support


def _custom_ops(nodes) -> list[dict]:
    """Nodes outside the standard ONNX domains, and what trtdeploy.ops has for each: a TensorRT plugin,
    a plugin-free lowering into standard ops, an ONNX Runtime implementation."""
    from ...ops import op_for

    counts = collections.Counter((n.domain, n.op_type) for n in nodes if n.domain not in ("", "ai.onnx"))
    found = []
    for (domain, op_type), count in sorted(counts.items()):
        op = op_for(domain, op_type)
        found.append({"op": f"{domain}::{op_type}", "count": count, "registered": op is not None,
                      "tensorrt_plugin": bool(op and op.plugin), "plugin_free_lowering": bool(op and op.lowering),
                      "onnxruntime_impl": bool(op and op.ort)})
    return found


def inspect_onnx(path: Path) -> dict:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path} is not a readable ONNX file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"pass an .onnx written by torch.onnx.export or `trtdeploy convert`") from None
    initializers = {i.name for i in model.graph.initializer}
    nodes = list(all_nodes(model.graph))
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return {
        "file": str(path), "kind": "onnx", "size_bytes": path.stat().st_size,
        "ir_version": model.ir_version, "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {op.domain or "ai.onnx": op.version for op in model.opset_import},
        "inputs": [_onnx_tensor(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [_onnx_tensor(v) for v in model.graph.output],
        "nodes": len(nodes), "parameters": params,
        "op_histogram": dict(collections.Counter(
            (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type) for n in nodes).most_common()),
        "custom_ops": _custom_ops(nodes),
        "backends": _backend_support(model),
        "sidecar": read_sidecar(path) if sidecar_path(path).exists() else None,
    }


def inspection_text(info: dict) -> tuple[list[str], list[str]]:
    """The ONNX file's header line, then its op histogram, custom ops and which backends can build it."""
    summary = [f"opsets: {', '.join(f'{d} {v}' for d, v in info['opsets'].items())}; IR {info['ir_version']}; "
               f"producer {info['producer'] or '-'}; {info['nodes']} nodes, {info['parameters']:,} parameters"]
    details = ["\nop histogram:", format_table(["op", "count"], list(info["op_histogram"].items()))]
    if info["custom_ops"]:
        details.append("\ncustom ops:")
        details.append(format_table(["op", "count", "registered", "TensorRT plugin", "plugin-free lowering",
                                     "ONNX Runtime impl"],
                                    [[c["op"], c["count"], c["registered"], c["tensorrt_plugin"],
                                      c["plugin_free_lowering"], c["onnxruntime_impl"]] for c in info["custom_ops"]]))
    details.append("\nbackends:")
    for name, s in info["backends"].items():
        if not s["installed"]:
            details.append(f"  {name}: not installed ({s['note']})")
        elif s["supported"]:
            details.append(f"  {name}: can build every node")
        else:
            bad = "; ".join(f"{b['name'] or '<unnamed>'} ({b['domain']}::{b['op_type']}): {b['hint']}"
                            for b in s["unsupported_nodes"])
            details.append(f"  {name}: cannot build {len(s['unsupported_nodes'])} node(s): {bad}")
    return summary, details
