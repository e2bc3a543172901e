"""``trtdeploy inspect`` of an engine: asked of TensorRT when it can deserialize the engine here; otherwise
read from the sidecar JSON that `convert` wrote beside it, with the reason TensorRT could not load it."""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import BackendUnavailableError, ModelError
from ..sidecar import read_sidecar, sidecar_path
from .builder import make_logger, numpy_dtype_name
from .compat import flavour_label, import_tensorrt
from .plugins import register_plugins


def _engine_from_tensorrt(path: Path) -> tuple[dict | None, str]:
    """What TensorRT itself says about the engine, or (None, why it cannot load it here)."""
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
            "built_with": flavour_label(sidecar.get("flavour"), sidecar.get("backend_version")), "tensorrt_note": reason}


def inspection_text(info: dict) -> tuple[list[str], list[str]]:
    """Where the engine's facts were read from, how it was built, its INT8 and plugins; then its layer count."""
    summary = [f"read from: {info['source']}" + (f" ({info['tensorrt_note']})" if info["tensorrt_note"] else ""),
               f"precision {info.get('precision') or '-'}; built with {info.get('built_with') or '?'}; compute "
               f"capabilities {', '.join(info.get('compute_capabilities') or []) or '-'}"]
    int8 = info.get("int8")
    if int8:
        summary.append(f"INT8: {int8.get('route')} route, {int8.get('method')} ranges, "
                       f"{len(int8.get('quantized_layers') or [])} quantized layers, kept in higher precision: "
                       f"{', '.join(int8.get('fp32_nodes') or []) or 'none'}")
    if info.get("plugins"):
        summary.append(f"plugins: {', '.join(map(str, info['plugins']))}")
    return summary, ([f"\n{info['num_layers']} layers"] if info.get("layers") else [])
