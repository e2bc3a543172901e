"""``trtdeploy inspect``: what an ONNX file or an engine holds, as a dict (for --json) and as text.

ONNX: inputs, outputs, opsets, an op histogram, custom ops and which backends can build the graph.
Engine: asked of TensorRT when it can deserialize the engine here; otherwise read from the sidecar
JSON that `convert` wrote beside it, with the reason TensorRT could not load it.
"""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends.base import BACKENDS, backend_for_file, get_backend
from ..backends.sidecar import read_sidecar, sidecar_path
from ..errors import ModelError
from ..registry import Registry
from .report import format_table
from ..utils.onnx_graph import all_nodes

INSPECTORS: Registry[Callable[[Path], dict]] = Registry("inspector (backend)", error=ModelError)


def _onnx_dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _onnx_tensor(value_info) -> dict:
    from onnx import helper

    elem = value_info.type.tensor_type.elem_type
    dtype = str(helper.tensor_dtype_to_np_dtype(elem)) if elem else "unknown"
    return {"name": value_info.name, "dtype": dtype, "shape": _onnx_dims(value_info)}




def _backend_support(model) -> dict:
    """For every registered backend: can it build this graph here, and which nodes stop it."""
    from ..errors import BackendUnavailableError

    support = {}
    for name in BACKENDS:
        backend = get_backend(name)
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
    from ..ops import CUSTOM_OPS, load_ops, plugin_for

    load_ops()
    counts = collections.Counter((n.domain, n.op_type) for n in nodes if n.domain not in ("", "ai.onnx"))
    found = []
    for (domain, op_type), count in sorted(counts.items()):
        key = f"{domain}::{op_type}"
        op = CUSTOM_OPS.get(key) if key in CUSTOM_OPS else None
        found.append({"op": key, "count": count, "registered": op is not None,
                      "tensorrt_plugin": plugin_for(domain, op_type) is not None,
                      "plugin_free_lowering": bool(op and op.lower),
                      "onnxruntime_impl": bool(op and op.ort_impl)})
    return found


@INSPECTORS.register("onnxruntime")
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


def _engine_from_tensorrt(path: Path) -> tuple[dict | None, str]:
    """What TensorRT itself says about the engine, or (None, why it cannot load it here)."""
    from ..backends.tensorrt import import_tensorrt
    from ..backends.tensorrt.builder import make_logger, numpy_dtype_name
    from ..backends.tensorrt.plugins import register_plugins
    from ..errors import BackendUnavailableError

    try:
        trt = import_tensorrt()
    except BackendUnavailableError as e:
        return None, str(e)
    if (read_sidecar(path) or {}).get("plugins"):
        register_plugins(trt)  # TensorRT deserializes an engine with plugins only once their creators are registered
    mod = trt.module
    trt_logger = make_logger(trt)
    engine = mod.Runtime(trt_logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        return None, f"{trt.label} cannot deserialize it here: {trt_logger.errors[0] if trt_logger.errors else 'no reason given'}"
    io = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == mod.TensorIOMode.INPUT
        io["inputs" if is_input else "outputs"].append(
            {"name": name, "dtype": numpy_dtype_name(engine.get_tensor_dtype(name)), "shape": list(engine.get_tensor_shape(name))})
    profiles = []
    for p in range(engine.num_optimization_profiles):
        profiles.append({t["name"]: dict(zip(("min_shape", "opt_shape", "max_shape"),
                                             (list(s) for s in engine.get_tensor_profile_shape(t["name"], p))))
                         for t in io["inputs"]})
    layers = json.loads(engine.create_engine_inspector().get_engine_information(mod.LayerInformationFormat.JSON))
    return {"source": trt.label, **io, "profiles": profiles, "num_layers": engine.num_layers,
            "layers": layers.get("Layers", [])}, ""


@INSPECTORS.register("tensorrt")
def inspect_engine(path: Path) -> dict:
    sidecar = read_sidecar(path) or {}
    info, reason = _engine_from_tensorrt(path)
    if info is None and not sidecar:
        raise ModelError(f"{path} cannot be inspected: {reason}; and it has no sidecar {sidecar_path(path).name} "
                         f"to read instead (convert it with `trtdeploy convert`)")
    facts = {k: sidecar.get(k) for k in ("precision", "flavour", "backend_version", "compute_capabilities",
                                         "hardware_compatibility_level", "strongly_typed", "built_from",
                                         "check_with", "onnx_sha256", "trtdeploy_version", "created", "task",
                                         "int8", "plugins")}
    body = info or {"source": f"sidecar {sidecar_path(path).name}", "inputs": sidecar.get("inputs", []),
                    "outputs": sidecar.get("outputs", []), "profiles": sidecar.get("profiles", [])}
    return {"file": str(path), "kind": "engine", "size_bytes": path.stat().st_size, **facts, **body,
            "tensorrt_note": reason}


def inspect_file(path: str | os.PathLike) -> dict:
    """Describe ``path`` (.onnx or an engine) as a JSON-ready dict."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; pass an .onnx file or an engine (.engine/.plan/.trt)")
    return INSPECTORS.get(backend_for_file(path).name)(path)


def _io_rows(info: dict) -> list[list]:
    return [[kind, t["name"], t["dtype"], "x".join(str(d) for d in t["shape"])]
            for kind in ("inputs", "outputs") for t in info.get(kind, [])]


def format_inspection(info: dict) -> str:
    """The dict of ``inspect_file`` as text for people."""
    lines = [f"{info['file']} ({info['kind']}, {info['size_bytes'] / 1e6:.2f} MB)"]
    if info["kind"] == "onnx":
        lines.append(f"opsets: {', '.join(f'{d} {v}' for d, v in info['opsets'].items())}; IR {info['ir_version']}; "
                     f"producer {info['producer'] or '-'}; {info['nodes']} nodes, {info['parameters']:,} parameters")
    else:
        lines.append(f"read from: {info['source']}" + (f" ({info['tensorrt_note']})" if info["tensorrt_note"] else ""))
        lines.append(f"precision {info.get('precision') or '-'}; built with "
                     f"{'TensorRT-RTX' if info.get('flavour') == 'tensorrt_rtx' else 'TensorRT'} "
                     f"{info.get('backend_version') or '?'}; compute capabilities "
                     f"{', '.join(info.get('compute_capabilities') or []) or '-'}")
        int8 = info.get("int8")
        if int8:
            lines.append(f"INT8: {int8.get('route')} route, {int8.get('method')} ranges, "
                         f"{len(int8.get('quantized_layers') or [])} quantized layers, kept in higher precision: "
                         f"{', '.join(int8.get('fp32_nodes') or []) or 'none'}")
        if info.get("plugins"):
            lines.append(f"plugins: {', '.join(map(str, info['plugins']))}")
    lines += ["", format_table(["", "name", "dtype", "shape"], _io_rows(info))]
    for i, profile in enumerate(info.get("profiles") or []):
        lines.append(f"\nprofile {i}:")
        lines.append(format_table(["input", "min", "opt", "max"], [
            [name, *("x".join(map(str, r[k])) for k in ("min_shape", "opt_shape", "max_shape"))]
            for name, r in profile.items()]))
    if info["kind"] == "onnx":
        lines.append("\nop histogram:")
        lines.append(format_table(["op", "count"], list(info["op_histogram"].items())))
        if info["custom_ops"]:
            lines.append("\ncustom ops:")
            lines.append(format_table(["op", "count", "registered", "TensorRT plugin", "plugin-free lowering",
                                       "ONNX Runtime impl"],
                                      [[c["op"], c["count"], c["registered"], c["tensorrt_plugin"],
                                        c["plugin_free_lowering"], c["onnxruntime_impl"]] for c in info["custom_ops"]]))
        lines.append("\nbackends:")
        for name, s in info["backends"].items():
            if not s["installed"]:
                lines.append(f"  {name}: not installed ({s['note']})")
            elif s["supported"]:
                lines.append(f"  {name}: can build every node")
            else:
                bad = "; ".join(f"{b['name'] or '<unnamed>'} ({b['domain']}::{b['op_type']}): {b['hint']}"
                                for b in s["unsupported_nodes"])
                lines.append(f"  {name}: cannot build {len(s['unsupported_nodes'])} node(s): {bad}")
    elif info.get("layers"):
        lines.append(f"\n{info['num_layers']} layers")
    return "\n".join(lines)
