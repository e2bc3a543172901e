"""``trtdeploy inspect``: what an ONNX file or an engine holds, as a dict (for --json) and as text.

The backend whose artefact it is describes it (``Backend.inspect``: ``backends/<name>/inspect.py``);
this module picks the backend and formats the dict for people.
"""
from __future__ import annotations

import os

from ..artefacts import resolve_model
from ..backends.base import backend_for_file
from ..errors import ModelError
from .report import format_table


def inspect_file(path: str | os.PathLike) -> dict:
    """Describe ``path`` (.onnx or an engine) as a JSON-ready dict."""
    path = resolve_model(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; pass an .onnx file or an engine (.engine/.plan/.trt)")
    return backend_for_file(path).inspect(path)


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
        lines.append(f"precision {info.get('precision') or '-'}; built with {info.get('built_with') or '?'}; "
                     f"compute capabilities "
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
